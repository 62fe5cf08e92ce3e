//! This crate's own ONNX Runtime CPU kernels, registered on the training sessions it creates; the models that
//! use them exist only inside those sessions (the saved step models are standard ONNX).
//!
//! - `ConvWeightGrad(X_blocked, dY_blocked) → dW`: the weight gradient of a 2-D convolution from activations
//!   in the NCHWc layout ([`super::conv_weight_grad`]); attributes `block`, `kernel_shape`, `strides`,
//!   `dilations`, `pads_begin`. Like ONNX Runtime's own NCHWc values, the inputs have 4-D shapes [N, C, H, W]
//!   with C a multiple of the block, their data laid out [N, C/block, H, W, block]. Runs on ONNX Runtime's
//!   intra-op threads, the batch split into a fixed number of parts so that the result does not depend on the
//!   thread count.
//! - `ReluGrad(Y, dY) → dX`: `dY` where `Y > 0`, else 0, in one pass.
//! - `GeluGrad(X, dY) → dX`: `dY·(Φ(X) + X·φ(X))`, the exact Gelu's gradient, in one pass.
//! - `LayerNormGrad(X, Scale, dY) → (dX, dScale, dB)`: LayerNormalization's gradients over the axes from
//!   `axis` on (attributes `axis`, `epsilon`), the statistics recomputed from X, in one pass over the rows;
//!   dScale and dB summed in a fixed number of row blocks, so that they do not depend on the thread count.
//! - `AdamWStep(p, g, m, v, lr, bc1, bc2) → (p', m', v')`: one parameter's AdamW update as
//!   `rl_passes::training::AdamWNote` describes it, in one pass; attributes `beta1`, `one_minus_beta1`, `beta2`,
//!   `one_minus_beta2`, `eps`, `weight_decay` (the constants of the standard ops it replaces).

use std::sync::Mutex;

use ort::operator::{
    ComputeContext, Kernel, KernelContext, Operator, OperatorDomain, OperatorInput, OperatorOutput,
};
use ort::session::builder::SessionBuilder;
use ort::session::Session;
use ort::value::TensorElementType;

use rl_passes::ir::{Graph, GraphError, NodeIndex};
use rl_passes::onnx::{AttributeProto, NodeProto};
use serde::de::DeserializeOwned;

use super::conv_weight_grad::{BlockedDims, Geometry, WeightGrad};

/// The operator domain of the kernels here.
pub const DOMAIN: &str = "ai.rl_rewrite";
/// The op type of the convolution weight gradient.
pub const CONV_WEIGHT_GRAD: &str = "ConvWeightGrad";
/// The op type of the Relu gradient.
pub const RELU_GRAD: &str = "ReluGrad";
/// The op type of the exact Gelu's gradient.
pub const GELU_GRAD: &str = "GeluGrad";
/// The op type of LayerNormalization's gradients.
pub const LAYER_NORM_GRAD: &str = "LayerNormGrad";
/// The op type of one parameter's AdamW update.
pub const ADAMW_STEP_OP: &str = "AdamWStep";

/// Parts the batch is split into: enough to keep a few cores busy, fixed so that sums are reproducible.
const PARTS: usize = 8;

/// A session of `model` (encoded ONNX) with this crate's kernels registered. Serialized across the process:
/// while a session initializes, ONNX Runtime enters a custom domain in a process-wide table, and two sessions
/// doing so at once fail with "the domain is already exist" (onnxruntime issue #22663).
pub fn commit_with_own_ops(mut builder: SessionBuilder, model: &[u8]) -> anyhow::Result<Session> {
    static INITIALIZING: Mutex<()> = Mutex::new(());
    builder = builder
        .with_operators(domain()?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let _one_at_a_time = INITIALIZING.lock().unwrap_or_else(|e| e.into_inner());
    Ok(builder.commit_from_memory(model)?)
}

/// The domain with every kernel of this crate, for `SessionBuilder::with_operators`.
pub fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(DOMAIN)?
        .add(ConvWeightGradOp)?
        .add(ReluGradOp)?
        .add(GeluGradOp)?
        .add(LayerNormGradOp)?
        .add(AdamWStepOp)
}

/// The note the autodiff left under `key` on `node`, if any and readable.
pub(super) fn note<T: DeserializeOwned>(node: &NodeProto, key: &str) -> Option<T> {
    let entry = node.metadata_props.iter().find(|p| p.key() == key)?;
    serde_json::from_str(entry.value()).ok()
}

/// Replaces the node at `index` by one of this crate's ops computing the same outputs from `inputs`, and
/// `extra_outputs` after them (values whose producers the caller has removed), and makes sure the model imports
/// [`DOMAIN`]. The nodes that only fed the replaced ones are left for dead-code elimination.
pub(super) fn replace_by_own_op(
    graph: &mut Graph,
    index: NodeIndex,
    op: &str,
    inputs: Vec<String>,
    extra_outputs: Vec<String>,
    attribute: Vec<AttributeProto>,
) -> Result<(), GraphError> {
    let replaced = graph.remove_node(index).expect("a node of the graph");
    let name = graph.fresh_name(&format!("{}/{op}", replaced.name()));
    let mut output = replaced.output;
    output.extend(extra_outputs);
    graph.add_node(NodeProto {
        op_type: Some(op.to_owned()),
        domain: Some(DOMAIN.to_owned()),
        name: Some(name),
        input: inputs,
        output,
        attribute,
        ..Default::default()
    })?;
    graph.import_domain(DOMAIN, 1);
    Ok(())
}

/// `N` required float32 inputs, as every kernel here takes.
fn float_inputs<const N: usize>() -> [OperatorInput; N] {
    [(); N].map(|_| OperatorInput::required(TensorElementType::Float32))
}

/// `N` required float32 outputs.
fn float_outputs<const N: usize>() -> [OperatorOutput; N] {
    [(); N].map(|_| OperatorOutput::required(TensorElementType::Float32))
}

struct ConvWeightGradOp;

fn pair(kctx: &KernelContext, name: &str, default: usize) -> ort::Result<[usize; 2]> {
    match kctx.get::<Vec<i64>>(name) {
        None => Ok([default; 2]),
        Some(v) if v.len() == 2 && v.iter().all(|&d| d >= 0) => Ok([v[0] as usize, v[1] as usize]),
        Some(v) => Err(ort::Error::new(format!(
            "{CONV_WEIGHT_GRAD}: attribute `{name}` must hold two non-negative values, not {v:?}"
        ))),
    }
}

impl Operator for ConvWeightGradOp {
    type Kernel<'attr> = ConvWeightGradKernel;

    fn name(&self) -> &str {
        CONV_WEIGHT_GRAD
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        float_inputs::<2>()
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        float_outputs::<1>()
    }

    fn create_kernel<'attr>(
        &self,
        kctx: &KernelContext<'attr>,
    ) -> ort::Result<ConvWeightGradKernel> {
        let kernel = kctx.get::<Vec<i64>>("kernel_shape").ok_or_else(|| {
            ort::Error::new(format!(
                "{CONV_WEIGHT_GRAD}: attribute `kernel_shape` is required"
            ))
        })?;
        if kernel.len() != 2 || kernel.iter().any(|&k| k < 1) {
            return Err(ort::Error::new(format!(
                "{CONV_WEIGHT_GRAD}: `kernel_shape` must be two positive sizes, not {kernel:?}"
            )));
        }
        let block = match kctx.get::<i64>("block") {
            Some(b) if b >= 1 => b,
            found => {
                return Err(ort::Error::new(format!(
                    "{CONV_WEIGHT_GRAD}: attribute `block` must be a positive channel count, not {found:?}"
                )))
            }
        };
        Ok(ConvWeightGradKernel {
            block: block as usize,
            geometry: Geometry {
                kernel: [kernel[0] as usize, kernel[1] as usize],
                strides: pair(kctx, "strides", 1)?,
                dilations: pair(kctx, "dilations", 1)?,
                pads_begin: pair(kctx, "pads_begin", 0)?,
            },
        })
    }
}

struct ConvWeightGradKernel {
    block: usize,
    geometry: Geometry,
}

/// [N, C, H, W] in blocks of `block` channels.
fn blocked_dims(shape: &[i64], block: usize, what: &str) -> ort::Result<BlockedDims> {
    if shape.len() != 4
        || shape.iter().any(|&d| d < 0)
        || !(shape[1] as usize).is_multiple_of(block)
    {
        return Err(ort::Error::new(format!(
            "{CONV_WEIGHT_GRAD}: {what} must be a 4-D blocked tensor whose channels are a multiple of {block}, \
             not {shape:?}"
        )));
    }
    let d = |i: usize| shape[i] as usize;
    Ok([d(0), d(1) / block, d(2), d(3), block])
}

impl Kernel for ConvWeightGradKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let missing = |what: &str| ort::Error::new(format!("{CONV_WEIGHT_GRAD}: no {what}"));
        let x = ctx.input(0)?.ok_or_else(|| missing("input X"))?;
        let dy = ctx.input(1)?.ok_or_else(|| missing("input dY"))?;
        let (x_shape, x) = x.try_extract_tensor::<f32>()?;
        let (dy_shape, dy) = dy.try_extract_tensor::<f32>()?;
        let b = self.block;
        let (xd, dyd) = (
            blocked_dims(x_shape, b, "X")?,
            blocked_dims(dy_shape, b, "dY")?,
        );
        let grad = WeightGrad::new(x, xd, dy, dyd, self.geometry.clone())
            .map_err(|e| ort::Error::new(format!("{CONV_WEIGHT_GRAD}: {e}")))?;
        let parts = PARTS.min(xd[0]).max(1);
        let partials: Vec<Mutex<Vec<f32>>> = (0..parts).map(|_| Mutex::new(Vec::new())).collect();
        ctx.par_for(parts, parts, |part| {
            let sum = grad.partial(grad.samples(part, parts));
            *partials[part].lock().unwrap_or_else(|e| e.into_inner()) = sum;
        })?;
        let partials: Vec<Vec<f32>> = partials
            .into_iter()
            .map(|p| p.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let dw = grad.finish(&partials);
        let [kh, kw] = self.geometry.kernel;
        let shape = vec![
            (dyd[1] * b) as i64,
            (xd[1] * b) as i64,
            kh as i64,
            kw as i64,
        ];
        let mut out = ctx.output(0, shape)?.ok_or_else(|| missing("output"))?;
        let (_, out) = out.try_extract_tensor_mut::<f32>()?;
        out.copy_from_slice(&dw);
        Ok(())
    }
}

/// A one-pass kernel of two same-shaped float inputs (an activation's output or input, and dY) giving dX.
#[derive(Clone, Copy)]
enum ActivationGrad {
    /// `dY` where `Y > 0`, else 0.
    Relu,
    /// `dY·(Φ(X) + X·φ(X))`.
    Gelu,
}

impl ActivationGrad {
    fn op(self) -> &'static str {
        match self {
            ActivationGrad::Relu => RELU_GRAD,
            ActivationGrad::Gelu => GELU_GRAD,
        }
    }

    fn apply(self, a: &[f32], dy: &[f32], dx: &mut [f32]) {
        match self {
            ActivationGrad::Relu => {
                for ((d, &y), &g) in dx.iter_mut().zip(a).zip(dy) {
                    *d = if y > 0.0 { g } else { 0.0 };
                }
            }
            ActivationGrad::Gelu => {
                for ((d, &x), &g) in dx.iter_mut().zip(a).zip(dy) {
                    *d = g * super::vector_math::gelu_derivative(x);
                }
            }
        }
    }
}

struct ReluGradOp;
struct GeluGradOp;

/// Elements per parallel chunk of an activation gradient: large enough to amortize a task, small enough to
/// spread a resnet activation (0.5–2 Mi elements) over the cores.
const ACTIVATION_CHUNK: usize = 1 << 16;

macro_rules! activation_grad_operator {
    ($op:ident, $kind:expr) => {
        impl Operator for $op {
            type Kernel<'attr> = ActivationGradKernel;

            fn name(&self) -> &str {
                $kind.op()
            }

            fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
                float_inputs::<2>()
            }

            fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
                float_outputs::<1>()
            }

            fn create_kernel<'attr>(
                &self,
                _: &KernelContext<'attr>,
            ) -> ort::Result<ActivationGradKernel> {
                Ok(ActivationGradKernel($kind))
            }
        }
    };
}

activation_grad_operator!(ReluGradOp, ActivationGrad::Relu);
activation_grad_operator!(GeluGradOp, ActivationGrad::Gelu);

struct ActivationGradKernel(ActivationGrad);

/// Writes through a raw pointer from the parallel tasks, each to its own chunk.
struct Out(*mut f32);
// SAFETY: the tasks write disjoint chunks of the output, which outlives the parallel loop.
unsafe impl Sync for Out {}
unsafe impl Send for Out {}

impl Out {
    /// The start of the output (through a method, so that closures capture the `Sync` wrapper).
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

impl Kernel for ActivationGradKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let kind = self.0;
        let op = kind.op();
        let missing = |what: &str| ort::Error::new(format!("{op}: no {what}"));
        let a = ctx.input(0)?.ok_or_else(|| missing("first input"))?;
        let dy = ctx.input(1)?.ok_or_else(|| missing("input dY"))?;
        let (a_shape, a) = a.try_extract_tensor::<f32>()?;
        let (dy_shape, dy) = dy.try_extract_tensor::<f32>()?;
        if a_shape != dy_shape {
            return Err(ort::Error::new(format!(
                "{op}: the activation {:?} and dY {:?} must have the same shape",
                &**a_shape, &**dy_shape
            )));
        }
        let mut out = ctx
            .output(0, a_shape.to_vec())?
            .ok_or_else(|| missing("output"))?;
        let (_, dx) = out.try_extract_tensor_mut::<f32>()?;
        let len = dx.len();
        let target = Out(dx.as_mut_ptr());
        let chunks = len.div_ceil(ACTIVATION_CHUNK);
        ctx.par_for(chunks, chunks, |k| {
            let range = k * ACTIVATION_CHUNK..((k + 1) * ACTIVATION_CHUNK).min(len);
            // SAFETY: chunk k covers its own range of the output, inside its length.
            let dx = unsafe {
                std::slice::from_raw_parts_mut(target.ptr().add(range.start), range.len())
            };
            kind.apply(&a[range.clone()], &dy[range], dx);
        })?;
        Ok(())
    }
}

struct AdamWStepOp;

/// Elements per parallel chunk of the AdamW update.
const ADAMW_CHUNK: usize = 1 << 15;

impl Operator for AdamWStepOp {
    type Kernel<'attr> = AdamWStepKernel;

    fn name(&self) -> &str {
        ADAMW_STEP_OP
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        float_inputs::<7>()
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        float_outputs::<3>()
    }

    fn create_kernel<'attr>(&self, kctx: &KernelContext<'attr>) -> ort::Result<AdamWStepKernel> {
        let get = |name: &str| {
            kctx.get::<f32>(name).ok_or_else(|| {
                ort::Error::new(format!("{ADAMW_STEP_OP}: attribute `{name}` is required"))
            })
        };
        Ok(AdamWStepKernel {
            beta1: get("beta1")?,
            one_minus_beta1: get("one_minus_beta1")?,
            beta2: get("beta2")?,
            one_minus_beta2: get("one_minus_beta2")?,
            eps: get("eps")?,
            weight_decay: get("weight_decay")?,
        })
    }
}

struct AdamWStepKernel {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    weight_decay: f32,
}

impl AdamWStepKernel {
    /// The update of one chunk, each operation rounded as the standard ops round it, in their order.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        (lr, bc1, bc2): (f32, f32, f32),
        p: &[f32],
        g: &[f32],
        m: &[f32],
        v: &[f32],
        p_next: &mut [f32],
        m_next: &mut [f32],
        v_next: &mut [f32],
    ) {
        for i in 0..p.len() {
            let mn = m[i] * self.beta1 + g[i] * self.one_minus_beta1;
            let vn = v[i] * self.beta2 + (g[i] * g[i]) * self.one_minus_beta2;
            let mut upd = (mn / bc1) / ((vn / bc2).sqrt() + self.eps);
            if self.weight_decay != 0.0 {
                upd += p[i] * self.weight_decay;
            }
            p_next[i] = p[i] - lr * upd;
            m_next[i] = mn;
            v_next[i] = vn;
        }
    }
}

impl Kernel for AdamWStepKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let missing = |what: &str| ort::Error::new(format!("{ADAMW_STEP_OP}: no {what}"));
        let mut inputs = Vec::with_capacity(7);
        for k in 0..7 {
            inputs.push(ctx.input(k)?.ok_or_else(|| missing("input"))?);
        }
        let mut tensors = Vec::with_capacity(7);
        for value in &inputs {
            tensors.push(value.try_extract_tensor::<f32>()?);
        }
        let shape = tensors[0].0.to_vec();
        if tensors[1..4].iter().any(|(s, _)| s.to_vec() != shape) {
            return Err(ort::Error::new(format!(
                "{ADAMW_STEP_OP}: p, g, m and v must have one shape, not {:?}",
                tensors[..4]
                    .iter()
                    .map(|(s, _)| s.to_vec())
                    .collect::<Vec<_>>()
            )));
        }
        let scalar = |k: usize| match tensors[k].1 {
            [x] => Ok(*x),
            _ => Err(ort::Error::new(format!(
                "{ADAMW_STEP_OP}: input {k} (lr, bc1, bc2) must be a scalar"
            ))),
        };
        let scalars = (scalar(4)?, scalar(5)?, scalar(6)?);
        let (p, g, m, v) = (tensors[0].1, tensors[1].1, tensors[2].1, tensors[3].1);
        let mut outs = Vec::with_capacity(3);
        for k in 0..3 {
            outs.push(
                ctx.output(k, shape.clone())?
                    .ok_or_else(|| missing("output"))?,
            );
        }
        let mut targets = Vec::with_capacity(3);
        for out in &mut outs {
            targets.push(Out(out.try_extract_tensor_mut::<f32>()?.1.as_mut_ptr()));
        }
        let len = p.len();
        let chunks = len.div_ceil(ADAMW_CHUNK);
        let this = &*self;
        ctx.par_for(chunks, chunks, |k| {
            let range = k * ADAMW_CHUNK..((k + 1) * ADAMW_CHUNK).min(len);
            // SAFETY: chunk k covers its own range of each output, inside their common length.
            let [pn, mn, vn] = [0, 1, 2].map(|o| unsafe {
                std::slice::from_raw_parts_mut(targets[o].ptr().add(range.start), range.len())
            });
            this.update(
                scalars,
                &p[range.clone()],
                &g[range.clone()],
                &m[range.clone()],
                &v[range.clone()],
                pn,
                mn,
                vn,
            );
        })?;
        Ok(())
    }
}

struct LayerNormGradOp;

impl Operator for LayerNormGradOp {
    type Kernel<'attr> = LayerNormGradKernel;

    fn name(&self) -> &str {
        LAYER_NORM_GRAD
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        float_inputs::<3>()
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        float_outputs::<3>()
    }

    fn create_kernel<'attr>(
        &self,
        kctx: &KernelContext<'attr>,
    ) -> ort::Result<LayerNormGradKernel> {
        let axis = kctx.get::<i64>("axis").filter(|&a| a >= 0).ok_or_else(|| {
            ort::Error::new(format!(
                "{LAYER_NORM_GRAD}: attribute `axis` (non-negative) is required"
            ))
        })?;
        let epsilon = kctx.get::<f32>("epsilon").ok_or_else(|| {
            ort::Error::new(format!(
                "{LAYER_NORM_GRAD}: attribute `epsilon` is required"
            ))
        })?;
        Ok(LayerNormGradKernel {
            axis: axis as usize,
            epsilon,
        })
    }
}

struct LayerNormGradKernel {
    axis: usize,
    epsilon: f32,
}

impl Kernel for LayerNormGradKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let missing = |what: &str| ort::Error::new(format!("{LAYER_NORM_GRAD}: no {what}"));
        let x = ctx.input(0)?.ok_or_else(|| missing("input X"))?;
        let scale = ctx.input(1)?.ok_or_else(|| missing("input Scale"))?;
        let dy = ctx.input(2)?.ok_or_else(|| missing("input dY"))?;
        let (x_shape, x) = x.try_extract_tensor::<f32>()?;
        let (scale_shape, scale) = scale.try_extract_tensor::<f32>()?;
        let (dy_shape, dy) = dy.try_extract_tensor::<f32>()?;
        let normalized = x_shape.get(self.axis..).unwrap_or(&[]).to_vec();
        if x_shape != dy_shape || scale_shape.to_vec() != normalized || scale.is_empty() {
            return Err(ort::Error::new(format!(
                "{LAYER_NORM_GRAD}: X {:?} and dY {:?} must have one shape, and Scale {:?} its axes from {}",
                &**x_shape, &**dy_shape, &**scale_shape, self.axis
            )));
        }
        let d = scale.len();
        let rows = x.len() / d;
        let mut dx_out = ctx
            .output(0, x_shape.to_vec())?
            .ok_or_else(|| missing("output dX"))?;
        let (_, dx) = dx_out.try_extract_tensor_mut::<f32>()?;
        let target = Out(dx.as_mut_ptr());
        let parts = PARTS.min(rows).max(1);
        let per_part = rows.div_ceil(parts);
        let partials: Vec<Mutex<(Vec<f32>, Vec<f32>)>> = (0..parts)
            .map(|_| Mutex::new((vec![0.0; d], vec![0.0; d])))
            .collect();
        let epsilon = self.epsilon;
        ctx.par_for(parts, parts, |part| {
            let range = (part * per_part).min(rows)..((part + 1) * per_part).min(rows);
            let elements = range.start * d..range.end * d;
            // SAFETY: part k writes its own rows of the output, inside its length.
            let dx = unsafe {
                std::slice::from_raw_parts_mut(target.ptr().add(elements.start), elements.len())
            };
            let mut sums = partials[part].lock().unwrap_or_else(|e| e.into_inner());
            let (dscale, dbias) = &mut *sums;
            super::layer_norm::rows(
                &x[elements.clone()],
                scale,
                &dy[elements],
                epsilon,
                dx,
                dscale,
                dbias,
            );
        })?;
        let (mut dscale, mut dbias) = (vec![0.0f32; d], vec![0.0f32; d]);
        for p in partials {
            let (s, b) = p.into_inner().unwrap_or_else(|e| e.into_inner());
            dscale.iter_mut().zip(&s).for_each(|(a, v)| *a += v);
            dbias.iter_mut().zip(&b).for_each(|(a, v)| *a += v);
        }
        for (k, values) in [(1, dscale), (2, dbias)] {
            let mut out = ctx
                .output(k, normalized.clone())?
                .ok_or_else(|| missing("output"))?;
            out.try_extract_tensor_mut::<f32>()?
                .1
                .copy_from_slice(&values);
        }
        Ok(())
    }
}
