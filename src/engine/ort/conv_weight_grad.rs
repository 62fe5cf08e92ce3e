//! The weight gradient of a 2-D convolution, computed straight from activations in ONNX Runtime's blocked
//! layout (NCHWc: [N, C/b, H, W, b], b channels innermost).
//!
//! In standard ONNX the weight gradient is an im2col (a Gather nine times the size of X, written to memory and
//! read back) followed by a GEMM with a long inner dimension. Here each output tile dW[b output channels,
//! b input channels] of one kernel tap is accumulated in registers over all output positions of all samples
//! of a part of the batch: per position, one vector of b input channels times b broadcast values of dY. Both operands are read in place
//! from the blocked tensors, which the blocked convolutions have produced anyway, so nothing is materialized.

use std::ops::Range;

/// Where the taps of a 2-D convolution read its input: `iy = oy·stride + ky·dilation − pad`.
#[derive(Clone, Debug, PartialEq)]
pub struct Geometry {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub pads_begin: [usize; 2],
}

/// A blocked tensor's dims: [batch, channel blocks, height, width, block].
pub type BlockedDims = [usize; 5];

/// Accumulates one tile: for `samples × rows × cols` positions, `acc[o][c] += dy[o] · x[c]` with
/// `o, c < block`. `x` and `dy` point at the first position; the strides are in floats.
type TileFn = unsafe fn(acc: &mut [f32], x: *const f32, dy: *const f32, walk: &Walk, block: usize);

/// How a tile walks its positions.
struct Walk {
    samples: usize,
    x_sample: usize,
    dy_sample: usize,
    rows: usize,
    cols: usize,
    x_row: usize,
    x_col: usize,
    dy_row: usize,
    dy_col: usize,
}

/// The weight gradient of one convolution: `dW[m, c, ky, kx] = Σ_{n, oy, ox} dY[n, m, oy, ox] · X[n, c, iy, ix]`.
pub struct WeightGrad<'a> {
    x: &'a [f32],
    dy: &'a [f32],
    xd: BlockedDims,
    dyd: BlockedDims,
    geometry: Geometry,
    tile: TileFn,
}

/// Whether this CPU has a vectorized tile for `block` (the NCHWc block of ONNX Runtime: 16 with AVX-512, 8
/// with AVX2): without one the kernel is correct but slower than ONNX Runtime's own im2col + GEMM.
pub fn fast_for(block: usize) -> bool {
    vector_tile(block).is_some()
}

#[cfg(target_arch = "x86_64")]
fn vector_tile(block: usize) -> Option<TileFn> {
    match block {
        16 if std::arch::is_x86_feature_detected!("avx512f") => Some(tile16_avx512),
        8 if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma") =>
        {
            Some(tile8_avx2)
        }
        _ => None,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn vector_tile(_block: usize) -> Option<TileFn> {
    None
}

impl<'a> WeightGrad<'a> {
    /// Checks that the blocked shapes fit the geometry: same batch and block, and dY's spatial size the one
    /// the windows give.
    pub fn new(
        x: &'a [f32],
        xd: BlockedDims,
        dy: &'a [f32],
        dyd: BlockedDims,
        geometry: Geometry,
    ) -> Result<WeightGrad<'a>, String> {
        Self::with_tile(x, xd, dy, dyd, geometry, None)
    }

    fn with_tile(
        x: &'a [f32],
        xd: BlockedDims,
        dy: &'a [f32],
        dyd: BlockedDims,
        geometry: Geometry,
        tile: Option<TileFn>,
    ) -> Result<WeightGrad<'a>, String> {
        let g = &geometry;
        if xd[0] != dyd[0] || xd[4] != dyd[4] || xd[4] == 0 {
            return Err(format!(
                "X {xd:?} and dY {dyd:?} (blocked: batch, channel blocks, height, width, block) differ in batch \
                 or block"
            ));
        }
        if x.len() != xd.iter().product::<usize>() || dy.len() != dyd.iter().product::<usize>() {
            return Err(format!(
                "data sizes {} and {} do not match the shapes {xd:?} and {dyd:?}",
                x.len(),
                dy.len()
            ));
        }
        if g.kernel.contains(&0) || g.strides.contains(&0) || g.dilations.contains(&0) {
            return Err(format!(
                "kernel, strides and dilations must be positive: {g:?}"
            ));
        }
        // dY holds one position per window; the last window may end inside the end padding but must not
        // start past it.
        for axis in 0..2 {
            let (size, out) = (xd[2 + axis], dyd[2 + axis]);
            if out > 0 && (out - 1) * g.strides[axis] > size + g.pads_begin[axis] {
                return Err(format!(
                    "dY's spatial size {:?} is more than the windows over X {:?} give ({g:?})",
                    &dyd[2..4],
                    &xd[2..4]
                ));
            }
        }
        let block = xd[4];
        let tile = tile
            .or_else(|| vector_tile(block))
            .unwrap_or(tile_scalar as TileFn);
        Ok(WeightGrad {
            x,
            dy,
            xd,
            dyd,
            geometry,
            tile,
        })
    }

    /// Floats in one partial sum: [taps, M/b, C/b, b, b].
    fn partial_len(&self) -> usize {
        let b = self.xd[4];
        self.geometry.kernel[0] * self.geometry.kernel[1] * self.dyd[1] * self.xd[1] * b * b
    }

    /// The samples of partition `part` of `parts`: contiguous ranges, fixed by the batch size alone so that the
    /// sum is the same whatever thread runs which part.
    pub fn samples(&self, part: usize, parts: usize) -> Range<usize> {
        let n = self.xd[0];
        n * part / parts..n * (part + 1) / parts
    }

    /// The partial sum over `samples`, laid out [taps, M/b, C/b, b (m), b (c)]. Each tile is accumulated over
    /// all the samples at once, so that its accumulators stay in registers.
    pub fn partial(&self, samples: Range<usize>) -> Vec<f32> {
        let [_, cb, h, w, b] = self.xd;
        let [_, mb, ho, wo, _] = self.dyd;
        let g = &self.geometry;
        let mut acc = vec![0f32; self.partial_len()];
        let samples = samples.start.min(self.xd[0])..samples.end.min(self.xd[0]);
        if samples.is_empty() {
            return acc;
        }
        let n = samples.start;
        for ky in 0..g.kernel[0] {
            let Some((oy, iy)) = valid(0, ky, h, ho, g) else {
                continue;
            };
            for kx in 0..g.kernel[1] {
                let Some((ox, ix)) = valid(1, kx, w, wo, g) else {
                    continue;
                };
                let walk = Walk {
                    samples: samples.len(),
                    x_sample: cb * h * w * b,
                    dy_sample: mb * ho * wo * b,
                    rows: oy.len(),
                    cols: ox.len(),
                    x_row: g.strides[0] * w * b,
                    x_col: g.strides[1] * b,
                    dy_row: wo * b,
                    dy_col: b,
                };
                let tap = ky * g.kernel[1] + kx;
                for m in 0..mb {
                    let dy_at = (((n * mb + m) * ho + oy.start) * wo + ox.start) * b;
                    for c in 0..cb {
                        let x_at = (((n * cb + c) * h + iy) * w + ix) * b;
                        let t = ((tap * mb + m) * cb + c) * b * b;
                        // SAFETY: `samples` lies within the batch, `valid` keeps every position inside X and
                        // dY (whose lengths `new` checked), and the tile writes b·b floats of `acc`.
                        unsafe {
                            (self.tile)(
                                &mut acc[t..t + b * b],
                                self.x.as_ptr().add(x_at),
                                self.dy.as_ptr().add(dy_at),
                                &walk,
                                b,
                            );
                        }
                    }
                }
            }
        }
        acc
    }

    /// Sums the partial sums in order and lays the result out as dW [M, C, kh, kw].
    pub fn finish(&self, partials: &[Vec<f32>]) -> Vec<f32> {
        let b = self.xd[4];
        let (mb, cb) = (self.dyd[1], self.xd[1]);
        let [kh, kw] = self.geometry.kernel;
        let (c_all, taps) = (cb * b, kh * kw);
        let mut sum = vec![0f32; self.partial_len()];
        for partial in partials {
            for (s, p) in sum.iter_mut().zip(partial) {
                *s += p;
            }
        }
        let mut dw = vec![0f32; sum.len()];
        let mut tiles = sum.chunks_exact(b * b);
        for tap in 0..taps {
            for m in 0..mb {
                for c in 0..cb {
                    let tile = tiles.next().expect("one tile per (tap, m, c)");
                    for (m_in, row) in tile.chunks_exact(b).enumerate() {
                        let at = ((m * b + m_in) * c_all + c * b) * taps + tap;
                        for (c_in, value) in row.iter().enumerate() {
                            dw[at + c_in * taps] = *value;
                        }
                    }
                }
            }
        }
        dw
    }

    /// The whole gradient on the calling thread.
    pub fn compute(&self) -> Vec<f32> {
        self.finish(&[self.partial(0..self.xd[0])])
    }
}

/// The output positions along `axis` whose tap `k` reads inside X, and the input position of the first one.
fn valid(
    axis: usize,
    k: usize,
    size: usize,
    out: usize,
    g: &Geometry,
) -> Option<(Range<usize>, usize)> {
    let (s, offset, pad) = (g.strides[axis], k * g.dilations[axis], g.pads_begin[axis]);
    // o·s + offset − pad ∈ [0, size)
    let first = pad.saturating_sub(offset).div_ceil(s);
    if size + pad <= offset {
        return None;
    }
    let last = ((size - 1 + pad - offset) / s + 1).min(out);
    (first < last).then(|| (first..last, first * s + offset - pad))
}

/// Any block size, one scalar at a time: the reference the vector tiles are tested against.
unsafe fn tile_scalar(acc: &mut [f32], x: *const f32, dy: *const f32, walk: &Walk, block: usize) {
    for n in 0..walk.samples {
        let (xn, dn) = (x.add(n * walk.x_sample), dy.add(n * walk.dy_sample));
        for r in 0..walk.rows {
            for q in 0..walk.cols {
                let xp = xn.add(r * walk.x_row + q * walk.x_col);
                let dp = dn.add(r * walk.dy_row + q * walk.dy_col);
                for o in 0..block {
                    let d = *dp.add(o);
                    for c in 0..block {
                        acc[o * block + c] += d * *xp.add(c);
                    }
                }
            }
        }
    }
}

/// A vector tile for a block of `$lanes` channels: one accumulator register per output channel of the block,
/// each over the block's input channels; per position one load of X and `$lanes` broadcasts of dY.
macro_rules! vector_tile {
    ($(#[$doc:meta])* $name:ident, $features:literal, $lanes:literal, $zero:ident, $load:ident, $store:ident,
     $fma:ident, $splat:ident) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(acc: &mut [f32], x: *const f32, dy: *const f32, walk: &Walk, _block: usize) {
            use std::arch::x86_64::*;
            let mut a = [$zero(); $lanes];
            for (o, v) in a.iter_mut().enumerate() {
                *v = $load(acc.as_ptr().add(o * $lanes));
            }
            for n in 0..walk.samples {
                let (xn, dn) = (x.add(n * walk.x_sample), dy.add(n * walk.dy_sample));
                for r in 0..walk.rows {
                    let (xr, dr) = (xn.add(r * walk.x_row), dn.add(r * walk.dy_row));
                    for q in 0..walk.cols {
                        let xv = $load(xr.add(q * walk.x_col));
                        let dp = dr.add(q * walk.dy_col);
                        for (o, v) in a.iter_mut().enumerate() {
                            *v = $fma($splat(*dp.add(o)), xv, *v);
                        }
                    }
                }
            }
            for (o, v) in a.iter().enumerate() {
                $store(acc.as_mut_ptr().add(o * $lanes), *v);
            }
        }
    };
}

vector_tile!(
    /// Block 16: sixteen AVX-512 accumulators.
    tile16_avx512, "avx512f", 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_fmadd_ps,
    _mm512_set1_ps
);
vector_tile!(
    /// Block 8: eight AVX2 accumulators.
    tile8_avx2, "avx2,fma", 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_fmadd_ps,
    _mm256_set1_ps
);

#[cfg(test)]
mod tests {
    use super::*;

    /// [N, C, H, W] → [N, C/b, H, W, b].
    fn blocked(t: &[f32], [n, c, h, w]: [usize; 4], b: usize) -> Vec<f32> {
        let mut out = vec![0f32; t.len()];
        for i in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        out[((((i * (c / b) + ch / b) * h + y) * w + x) * b) + ch % b] =
                            t[((i * c + ch) * h + y) * w + x];
                    }
                }
            }
        }
        out
    }

    /// The definition, in f64.
    fn reference(
        x: &[f32],
        [n, c, h, w]: [usize; 4],
        dy: &[f32],
        [m, ho, wo]: [usize; 3],
        g: &Geometry,
    ) -> Vec<f32> {
        let [kh, kw] = g.kernel;
        let mut dw = vec![0f64; m * c * kh * kw];
        for i in 0..n {
            for mm in 0..m {
                for cc in 0..c {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let mut s = 0f64;
                            for oy in 0..ho {
                                for ox in 0..wo {
                                    let iy = (oy * g.strides[0] + ky * g.dilations[0]) as isize
                                        - g.pads_begin[0] as isize;
                                    let ix = (ox * g.strides[1] + kx * g.dilations[1]) as isize
                                        - g.pads_begin[1] as isize;
                                    if (0..h as isize).contains(&iy)
                                        && (0..w as isize).contains(&ix)
                                    {
                                        s += dy[((i * m + mm) * ho + oy) * wo + ox] as f64
                                            * x[((i * c + cc) * h + iy as usize) * w + ix as usize]
                                                as f64;
                                    }
                                }
                            }
                            dw[((mm * c + cc) * kh + ky) * kw + kx] += s;
                        }
                    }
                }
            }
        }
        dw.into_iter().map(|v| v as f32).collect()
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// Output size of a window along one axis, with the end pad `pe`.
    fn out(size: usize, k: usize, s: usize, d: usize, pb: usize, pe: usize) -> usize {
        (size + pb + pe - (k - 1) * d - 1) / s + 1
    }

    /// Every tile this CPU has and the scalar one, against the f64 definition; `parts` partitions.
    fn check(
        n: usize,
        c: usize,
        m: usize,
        hw: [usize; 2],
        g: Geometry,
        pads_end: [usize; 2],
        b: usize,
    ) {
        let ho = out(
            hw[0],
            g.kernel[0],
            g.strides[0],
            g.dilations[0],
            g.pads_begin[0],
            pads_end[0],
        );
        let wo = out(
            hw[1],
            g.kernel[1],
            g.strides[1],
            g.dilations[1],
            g.pads_begin[1],
            pads_end[1],
        );
        let x = values(n * c * hw[0] * hw[1], 1);
        let dy = values(n * m * ho * wo, 2);
        let expected = reference(&x, [n, c, hw[0], hw[1]], &dy, [m, ho, wo], &g);
        let (xb, dyb) = (
            blocked(&x, [n, c, hw[0], hw[1]], b),
            blocked(&dy, [n, m, ho, wo], b),
        );
        let xd = [n, c / b, hw[0], hw[1], b];
        let dyd = [n, m / b, ho, wo, b];
        let mut tiles: Vec<(&str, TileFn)> = vec![("scalar", tile_scalar)];
        if let Some(t) = vector_tile(b) {
            tiles.push(("vector", t));
        }
        for (name, tile) in tiles {
            let k = WeightGrad::with_tile(&xb, xd, &dyb, dyd, g.clone(), Some(tile)).unwrap();
            for parts in [1, 3] {
                let partials: Vec<Vec<f32>> =
                    (0..parts).map(|p| k.partial(k.samples(p, parts))).collect();
                let got = k.finish(&partials);
                let worst = got
                    .iter()
                    .zip(&expected)
                    .map(|(a, e)| (a - e).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < 1e-4,
                    "{name} tile, block {b}, {parts} parts, {g:?}: worst difference {worst}"
                );
            }
        }
    }

    fn geometry(k: usize, s: usize, d: usize, p: usize) -> Geometry {
        Geometry {
            kernel: [k, k],
            strides: [s, s],
            dilations: [d, d],
            pads_begin: [p, p],
        }
    }

    #[test]
    fn matches_the_definition_for_resnet_shapes_in_both_blocks() {
        for b in [8, 16] {
            check(3, 2 * b, b, [9, 7], geometry(3, 1, 1, 1), [1, 1], b);
            check(2, b, 2 * b, [9, 8], geometry(3, 2, 1, 1), [1, 1], b);
            check(2, b, b, [6, 6], geometry(1, 2, 1, 0), [0, 0], b);
        }
    }

    #[test]
    fn matches_the_definition_with_dilation_uneven_pads_and_windows_past_the_input() {
        check(2, 8, 8, [10, 7], geometry(3, 1, 2, 2), [0, 3], 8);
        check(2, 8, 8, [5, 5], geometry(5, 2, 1, 4), [4, 4], 8);
        // A 7×7 kernel on a 3×3 input: most taps read padding only.
        check(1, 8, 16, [3, 3], geometry(7, 1, 1, 3), [3, 3], 8);
    }

    #[test]
    fn rejects_shapes_that_do_not_fit() {
        let x = vec![0f32; 2 * 16 * 4 * 4];
        let dy = vec![0f32; 2 * 16 * 4 * 4];
        let g = geometry(3, 1, 1, 1);
        assert!(WeightGrad::new(&x, [2, 2, 4, 4, 8], &dy, [2, 1, 4, 4, 16], g.clone()).is_err());
        assert!(WeightGrad::new(&x, [2, 2, 4, 4, 8], &dy, [1, 2, 4, 4, 8], g.clone()).is_err());
        assert!(
            WeightGrad::new(&x, [2, 2, 4, 4, 8], &dy[..16], [2, 2, 4, 4, 8], g.clone()).is_err()
        );
        let dy_big = vec![0f32; 2 * 16 * 9 * 9];
        let err = WeightGrad::new(&x, [2, 2, 4, 4, 8], &dy_big, [2, 2, 9, 9, 8], g)
            .err()
            .unwrap();
        assert!(err.contains("spatial size"), "{err}");
    }
}
