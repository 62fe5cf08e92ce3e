//! Vision Transformers (Dosovitskiy et al. 2020) in torchvision's layout: pre-LN encoder blocks, patch
//! embedding by a strided Conv, a learned class token and positional embedding, final LayerNorm, a linear
//! head on the class token.
//!
//! Only ops that tract-onnx 0.23 runs are used. Linear layers inside the encoder are `MatMul` + `Add` with
//! weights stored **[in, out]** (transposed with respect to PyTorch's `nn.Linear.weight`, as `torch.onnx`
//! exports do); the head is a `Gemm` with transB = 1 and a PyTorch-layout [classes, dim] weight.
//!
//! Every encoder block is built by the same code with the same constants (shape tensors and scalars are
//! `Constant` nodes, one set per block, identical in value), so all blocks are structurally identical: same
//! ops, attributes and parameter shapes.

use crate::builder::{attr_float, attr_int, attr_ints, Dim, GraphBuilder, Init};
use crate::resnet::input;
use crate::ZooOptions;

/// ViT hyper-parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VitConfig {
    pub depth: usize,
    pub dim: usize,
    pub heads: usize,
    pub mlp_dim: usize,
    pub patch: usize,
}

/// LayerNorm epsilon (torchvision's ViT uses 1e-6).
const LN_EPS: f32 = 1e-6;
/// Std of the truncated-normal init of linear layers, embeddings and class token.
const STD: f64 = 0.02;

fn layer_norm(b: &mut GraphBuilder, name: &str, x: &str, dim: usize) -> String {
    let w = b.param(&format!("{name}.weight"), &[dim], Init::NearOne);
    let bias = b.param(&format!("{name}.bias"), &[dim], Init::NearZero);
    b.node(
        "LayerNormalization",
        name,
        &[x, &w, &bias],
        vec![attr_int("axis", -1), attr_float("epsilon", LN_EPS)],
    )
}

/// `MatMul(x, W[in, out]) + bias[out]`; node names `{name}` and `{name}.add`.
fn linear(
    b: &mut GraphBuilder,
    name: &str,
    weight: &str,
    bias: &str,
    x: &str,
    fan_in: usize,
    fan_out: usize,
) -> String {
    let w = b.param(weight, &[fan_in, fan_out], Init::TruncNormal { std: STD });
    let bias = b.param(bias, &[fan_out], Init::TruncNormal { std: STD });
    let h = b.node("MatMul", name, &[x, &w], vec![]);
    b.node("Add", &format!("{name}.add"), &[&h, &bias], vec![])
}

/// Multi-head self-attention with a fused [dim, 3·dim] input projection.
fn self_attention(b: &mut GraphBuilder, p: &str, x: &str, cfg: &VitConfig) -> String {
    let (d, h) = (cfg.dim, cfg.heads);
    let dh = d / h;
    let qkv = linear(
        b,
        &format!("{p}.in_proj"),
        &format!("{p}.in_proj_weight"),
        &format!("{p}.in_proj_bias"),
        x,
        d,
        3 * d,
    );
    let split = b.const_i64(&format!("{p}.split_sizes"), &[d as i64; 3], &[3]);
    let qkv = b.node_with_outputs(
        "Split",
        &format!("{p}.split"),
        &[&qkv, &split],
        &[&format!("{p}.q"), &format!("{p}.k"), &format!("{p}.v")],
        vec![attr_int("axis", 2)],
    );
    // [N, T, D] -> [N, T, H, Dh]; 0 copies the batch dimension (allowzero = 0), -1 infers T.
    let heads_shape = b.const_i64(
        &format!("{p}.heads_shape"),
        &[0, -1, h as i64, dh as i64],
        &[4],
    );
    let split_heads = |b: &mut GraphBuilder, v: &str, which: &str, perm: &[i64]| {
        let r = b.node(
            "Reshape",
            &format!("{p}.{which}_heads"),
            &[v, &heads_shape],
            vec![attr_int("allowzero", 0)],
        );
        b.node(
            "Transpose",
            &format!("{p}.{which}_transpose"),
            &[&r],
            vec![attr_ints("perm", perm)],
        )
    };
    let q = split_heads(b, &qkv[0], "q", &[0, 2, 1, 3]); // [N, H, T, Dh]
    let k = split_heads(b, &qkv[1], "k", &[0, 2, 3, 1]); // [N, H, Dh, T]
    let v = split_heads(b, &qkv[2], "v", &[0, 2, 1, 3]); // [N, H, T, Dh]
    let scores = b.node("MatMul", &format!("{p}.scores"), &[&q, &k], vec![]);
    let scale = b.const_f32(
        &format!("{p}.scale_factor"),
        (1.0 / (dh as f64).sqrt()) as f32,
    );
    let scores = b.node("Mul", &format!("{p}.scale"), &[&scores, &scale], vec![]);
    let attn = b.node(
        "Softmax",
        &format!("{p}.softmax"),
        &[&scores],
        vec![attr_int("axis", -1)],
    );
    let ctx = b.node("MatMul", &format!("{p}.context"), &[&attn, &v], vec![]);
    let ctx = b.node(
        "Transpose",
        &format!("{p}.context_transpose"),
        &[&ctx],
        vec![attr_ints("perm", &[0, 2, 1, 3])],
    );
    let merge_shape = b.const_i64(&format!("{p}.merge_shape"), &[0, -1, d as i64], &[3]);
    let ctx = b.node(
        "Reshape",
        &format!("{p}.merge_heads"),
        &[&ctx, &merge_shape],
        vec![attr_int("allowzero", 0)],
    );
    linear(
        b,
        &format!("{p}.out_proj"),
        &format!("{p}.out_proj.weight"),
        &format!("{p}.out_proj.bias"),
        &ctx,
        d,
        d,
    )
}

/// Exact GELU: `x · 0.5 · (1 + erf(x / √2))`.
fn gelu(b: &mut GraphBuilder, p: &str, x: &str) -> String {
    let sqrt2 = b.const_f32(&format!("{p}.sqrt2"), std::f32::consts::SQRT_2);
    let one = b.const_f32(&format!("{p}.one"), 1.0);
    let half = b.const_f32(&format!("{p}.half"), 0.5);
    let t = b.node("Div", &format!("{p}.div"), &[x, &sqrt2], vec![]);
    let t = b.node("Erf", &format!("{p}.erf"), &[&t], vec![]);
    let t = b.node("Add", &format!("{p}.add"), &[&t, &one], vec![]);
    let t = b.node("Mul", &format!("{p}.mul"), &[x, &t], vec![]);
    b.node("Mul", &format!("{p}.mul_half"), &[&t, &half], vec![])
}

fn encoder_block(b: &mut GraphBuilder, p: &str, x: &str, cfg: &VitConfig) -> String {
    let h = layer_norm(b, &format!("{p}.ln_1"), x, cfg.dim);
    let h = self_attention(b, &format!("{p}.self_attention"), &h, cfg);
    let x = b.node("Add", &format!("{p}.add_1"), &[x, &h], vec![]);
    let h = layer_norm(b, &format!("{p}.ln_2"), &x, cfg.dim);
    let h = linear(
        b,
        &format!("{p}.mlp.0"),
        &format!("{p}.mlp.0.weight"),
        &format!("{p}.mlp.0.bias"),
        &h,
        cfg.dim,
        cfg.mlp_dim,
    );
    let h = gelu(b, &format!("{p}.mlp.1"), &h);
    let h = linear(
        b,
        &format!("{p}.mlp.3"),
        &format!("{p}.mlp.3.weight"),
        &format!("{p}.mlp.3.bias"),
        &h,
        cfg.mlp_dim,
        cfg.dim,
    );
    b.node("Add", &format!("{p}.add_2"), &[&x, &h], vec![])
}

pub(crate) fn build(b: &mut GraphBuilder, cfg: &VitConfig, opts: &ZooOptions) {
    let d = cfg.dim;
    let side = opts.image_size / cfg.patch;
    let tokens = side * side + 1;
    let x = input(b, opts);

    // Patch embedding: Conv(k = s = patch) → [N, D, h, w] → [N, D, h·w] → [N, h·w, D].
    let fan_in = opts.channels * cfg.patch * cfg.patch;
    let w = b.param(
        "conv_proj.weight",
        &[d, opts.channels, cfg.patch, cfg.patch],
        Init::TruncNormal {
            std: (1.0 / fan_in as f64).sqrt(),
        },
    );
    let bias = b.param("conv_proj.bias", &[d], Init::TruncNormal { std: STD });
    let (pk, ps) = (cfg.patch as i64, cfg.patch as i64);
    let h = b.node(
        "Conv",
        "conv_proj",
        &[&x, &w, &bias],
        vec![
            attr_ints("kernel_shape", &[pk, pk]),
            attr_ints("strides", &[ps, ps]),
            attr_ints("pads", &[0, 0, 0, 0]),
        ],
    );
    let flat_shape = b.const_i64("patch_flatten_shape", &[0, d as i64, -1], &[3]);
    let h = b.node(
        "Reshape",
        "patch_flatten",
        &[&h, &flat_shape],
        vec![attr_int("allowzero", 0)],
    );
    let patches = b.node(
        "Transpose",
        "patch_transpose",
        &[&h],
        vec![attr_ints("perm", &[0, 2, 1])],
    );

    // Class token [1, 1, D] broadcast to [N, 1, D]: Expand to Concat(Shape(input)[0:1], [1, D]).
    let cls = b.param("class_token", &[1, 1, d], Init::TruncNormal { std: STD });
    let shape = b.node("Shape", "input_shape", &[&x], vec![]);
    let zero = b.const_i64("batch_index", &[0], &[1]);
    let batch = b.node(
        "Gather",
        "batch_size",
        &[&shape, &zero],
        vec![attr_int("axis", 0)],
    );
    let tail = b.const_i64("class_token_tail_shape", &[1, d as i64], &[2]);
    let cls_shape = b.node(
        "Concat",
        "class_token_shape",
        &[&batch, &tail],
        vec![attr_int("axis", 0)],
    );
    let cls = b.node("Expand", "class_token_expand", &[&cls, &cls_shape], vec![]);
    let h = b.node(
        "Concat",
        "tokens",
        &[&cls, &patches],
        vec![attr_int("axis", 1)],
    );
    let pos = b.param(
        "encoder.pos_embedding",
        &[1, tokens, d],
        Init::TruncNormal { std: STD },
    );
    let mut h = b.node("Add", "encoder.pos_add", &[&h, &pos], vec![]);

    for i in 0..cfg.depth {
        h = encoder_block(b, &format!("encoder.layers.{i}"), &h, cfg);
    }
    let h = layer_norm(b, "encoder.ln", &h, d);

    // Class token: Gather index 0 on the token axis → [N, D].
    let first = b.const_i64("class_token_index", &[0], &[]);
    let h = b.node(
        "Gather",
        "class_token_select",
        &[&h, &first],
        vec![attr_int("axis", 1)],
    );
    let logits = b.linear_gemm(
        "heads.head",
        "logits",
        &h,
        d,
        opts.classes,
        Some(Init::TruncNormal { std: STD }),
    );
    b.output(&logits, &[Dim::Sym("N"), Dim::Val(opts.classes)]);
}
