//! Branch-free float32 functions for this crate's elementwise kernels, written so that the compiler vectorizes
//! the loops calling them (the `std`/`libm` versions are calls per element).

/// e^x for x in float32's range (below −87.3 it flushes to 0, above 88.7 it saturates at 2^128 ≈ ∞), relative
/// error under 2e-7: x = n·ln 2 + r with |r| ≤ ln 2 / 2, e^r by its degree-7 Taylor–minimax polynomial, and
/// 2^n put in the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest by adding and removing 1.5·2²³ (exact for |y| < 2²²): `f32::round` is a call on
    // targets without SSE4.1, which would keep the loop scalar.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.7);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // e^r = 1 + r + r²·P(r), P's coefficients near 1/2!, 1/3!, … (Cephes' minimax values).
    let p = 1.987_569_2e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    e_r * scale
}

/// The exact GELU's derivative Φ(x) + x·φ(x), with Φ the standard normal distribution and φ its density.
/// Φ from erfc(|x|/√2) = t·(a1 + t·(a2 + …))·e^(−x²/2), t = 1/(1 + p·|x|/√2) (Abramowitz & Stegun 7.1.26,
/// absolute error under 1.5e-7; the derivative within 3e-7 of the exact one), taken as Φ = erfc/2 for x < 0 and 1 − erfc/2 otherwise, so that the left tail
/// keeps its relative precision.
#[inline(always)]
pub fn gelu_derivative(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let gauss = exp(-0.5 * x * x);
    let half_erfc = 0.5 * poly * gauss;
    let cdf = if x < 0.0 { half_erfc } else { 1.0 - half_erfc };
    cdf + x * gauss * FRAC_1_SQRT_2PI
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_float32_rounding_of_the_exact_value() {
        let mut worst = 0.0f64;
        for k in -87_000..=88_000 {
            let x = k as f32 * 1e-3;
            let exact = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - exact).abs() / exact);
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(exp(-200.0), exp(-87.3));
        assert!(exp(-200.0) < 1e-37);
    }

    #[test]
    fn gelu_derivative_matches_the_float64_formula() {
        let exact = |x: f64| {
            let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
            cdf + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
        };
        let mut worst = 0.0f64;
        for k in -12_000..=12_000 {
            let x = k as f32 * 1e-3;
            let e = exact(x as f64);
            worst = worst.max(((gelu_derivative(x) as f64) - e).abs());
        }
        // About two float32 ulps of the derivative's largest values (up to 1.13): the erfc approximation's
        // 1.5e-7, halved, plus the exponential's and the roundings' share.
        assert!(worst < 3e-7, "worst absolute error {worst:e}");
        assert_eq!(gelu_derivative(0.0), 0.5);
    }
}
