//! MatMul (batched, broadcasting, 1-D operands) and Gemm (alpha, beta, transA, transB, broadcast C).

use crate::analysis::shapes::attr_float;
use crate::analysis::shapes::attr_int;
use crate::analysis::shapes::broadcast;
use crate::autodiff::{Attr, GradCtx, RuleArgs};

type Grads = Result<Vec<Option<String>>, String>;

/// Swaps the last two axes.
fn transpose_last(ctx: &mut GradCtx, x: &str, rank: usize) -> String {
    let mut perm: Vec<i64> = (0..rank as i64).collect();
    perm.swap(rank - 2, rank - 1);
    ctx.op("Transpose", &[x], vec![("perm", Attr::Ints(perm))])
}

/// `Y = A @ B` with numpy semantics. 1-D operands are promoted to matrices ([k] → [1,k] for A, [k,1] for
/// B), products are taken on the promoted shapes, and the gradients are summed over broadcast batch axes and
/// reshaped back.
pub fn matmul(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let (sa, sb) = (a.in_shape(0)?.to_vec(), a.in_shape(1)?.to_vec());
    let a2 = if sa.len() == 1 {
        vec![1, sa[0]]
    } else {
        sa.clone()
    };
    let b2 = if sb.len() == 1 {
        vec![sb[0], 1]
    } else {
        sb.clone()
    };
    let batch = broadcast(&[&a2[..a2.len() - 2], &b2[..b2.len() - 2]])?;
    let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
    let mut y2 = batch.clone();
    y2.extend([m, n]);
    let mut dy = a.dy0()?.to_owned();
    if a.out_shape(0)? != y2.as_slice() {
        dy = ctx.reshape(&dy, &y2);
    }
    if a2.len() > 2 && sb.len() == 2 {
        return matrix_times_shared(ctx, a, &sa, &dy, (m, k, n));
    }
    let mut out = vec![None, None];
    if a.needs(0) {
        // dA = dY @ Bᵀ, shaped batch + [m, k]
        let mut bv = a.input(1).to_owned();
        if sb.len() == 1 {
            bv = ctx.reshape(&bv, &b2);
        }
        let bt = transpose_last(ctx, &bv, b2.len());
        let p = ctx.op("MatMul", &[&dy, &bt], vec![]);
        let mut from = batch.clone();
        from.extend([m, k]);
        let g = ctx.reduce_to_shape(&p, &from, &a2)?;
        out[0] = Some(if sa != a2 { ctx.reshape(&g, &sa) } else { g });
    }
    if a.needs(1) {
        // dB = Aᵀ @ dY, shaped batch + [k, n]
        let mut av = a.input(0).to_owned();
        if sa.len() == 1 {
            av = ctx.reshape(&av, &a2);
        }
        let at = transpose_last(ctx, &av, a2.len());
        let p = ctx.op("MatMul", &[&at, &dy], vec![]);
        let mut from = batch.clone();
        from.extend([k, n]);
        let g = ctx.reduce_to_shape(&p, &from, &b2)?;
        out[1] = Some(if sb != b2 { ctx.reshape(&g, &sb) } else { g });
    }
    Ok(out)
}

/// `Y = A @ B` where `A` is `batch + [m, k]` and the matrix `B` `[k, n]` is shared by every batch entry, as in
/// a linear layer applied to a sequence. The batch axes fold into the rows, as PyTorch's `linear` backward does:
/// `dB = A₂ᵀ · dY₂` is one GEMM over all `batch·m` rows instead of one `[k, n]` product per batch entry summed
/// afterwards (a `batch·k·n` temporary and a reduction over it), and `dA = dY₂ · Bᵀ` is one GEMM too.
fn matrix_times_shared(
    ctx: &mut GradCtx,
    a: &RuleArgs,
    sa: &[usize],
    dy: &str,
    (m, k, n): (usize, usize, usize),
) -> Grads {
    let rows = sa[..sa.len() - 2].iter().product::<usize>() * m;
    let dy2 = ctx.reshape(dy, &[rows, n]);
    let mut out = vec![None, None];
    if a.needs(0) {
        let g = emit_gemm(ctx, &dy2, a.input(1), 1.0, false, true);
        out[0] = Some(ctx.reshape(&g, sa));
    }
    if a.needs(1) {
        let a2 = ctx.reshape(a.input(0), &[rows, k]);
        out[1] = Some(emit_gemm(ctx, &a2, &dy2, 1.0, true, false));
    }
    Ok(out)
}

/// A Gemm node emitting `alpha · op(X) · op(Y)`.
fn emit_gemm(ctx: &mut GradCtx, x: &str, y: &str, alpha: f32, ta: bool, tb: bool) -> String {
    ctx.op(
        "Gemm",
        &[x, y],
        vec![
            ("alpha", Attr::Float(alpha)),
            ("transA", Attr::Int(ta as i64)),
            ("transB", Attr::Int(tb as i64)),
        ],
    )
}

/// `Y = alpha · A' B' + beta · C` with `A' = transA ? Aᵀ : A`, `B' = transB ? Bᵀ : B`.
pub fn gemm_grad(ctx: &mut GradCtx, a: &RuleArgs) -> Grads {
    let alpha = attr_float(a.node, "alpha").unwrap_or(1.0);
    let beta = attr_float(a.node, "beta").unwrap_or(1.0);
    let ta = attr_int(a.node, "transA").unwrap_or(0) != 0;
    let tb = attr_int(a.node, "transB").unwrap_or(0) != 0;
    let dy = a.dy0()?.to_owned();
    let (av, bv) = (a.input(0).to_owned(), a.input(1).to_owned());
    let mut out = vec![None; a.node.input.len()];
    if a.needs(0) {
        // dA' = alpha dY B'ᵀ; dA = dA' or dA'ᵀ = alpha B' dYᵀ
        out[0] = Some(match (ta, tb) {
            (false, false) => emit_gemm(ctx, &dy, &bv, alpha, false, true),
            (false, true) => emit_gemm(ctx, &dy, &bv, alpha, false, false),
            (true, false) => emit_gemm(ctx, &bv, &dy, alpha, false, true),
            (true, true) => emit_gemm(ctx, &bv, &dy, alpha, true, true),
        });
    }
    if a.needs(1) {
        // dB' = alpha A'ᵀ dY; dB = dB' or dB'ᵀ = alpha dYᵀ A'
        out[1] = Some(match (ta, tb) {
            (false, false) => emit_gemm(ctx, &av, &dy, alpha, true, false),
            (true, false) => emit_gemm(ctx, &av, &dy, alpha, false, false),
            (false, true) => emit_gemm(ctx, &dy, &av, alpha, true, false),
            (true, true) => emit_gemm(ctx, &dy, &av, alpha, true, true),
        });
    }
    if a.needs(2) {
        let g = if beta == 1.0 {
            dy.clone()
        } else {
            let b = ctx.scalar(a.in_type(2)?.dtype, beta as f64);
            ctx.op("Mul", &[&dy, &b], vec![])
        };
        out[2] = Some(ctx.reduce_to_shape(&g, a.out_shape(0)?, a.in_shape(2)?)?);
    }
    Ok(out)
}
