//! Gradient rules, one small unit per op family. A rule maps the gradients of a node's outputs to the
//! gradients of its inputs (`None` where no gradient flows), emitting standard ONNX ops through [`GradCtx`].

pub(crate) mod activations;
mod conv;
mod elementwise;
mod matmul;
mod norm;
mod pool;
mod reduce;
mod regularize;
mod shape_ops;
mod softmax;

pub use activations::{GeluGradNote, ReluGradNote, GELU_GRAD_NOTE, RELU_GRAD_NOTE};
pub use conv::{WeightGradNote, WEIGHT_GRAD_NOTE};
pub use norm::{LayerNormGradNote, LAYER_NORM_GRAD_NOTE};

use super::{GradCtx, RuleArgs};

/// A gradient rule: one entry per input of the forward node.
pub type Rule = fn(&mut GradCtx, &RuleArgs) -> Result<Vec<Option<String>>, String>;

/// The rule of an op, if it has one.
pub fn rule_for(op: &str) -> Option<Rule> {
    Some(match op {
        "Add" => elementwise::add,
        "Sub" => elementwise::sub,
        "Mul" => elementwise::mul,
        "Div" => elementwise::div,
        "Pow" => elementwise::pow,
        "Max" | "Min" => elementwise::max_min,
        "Neg" => elementwise::neg,
        "Sqrt" => elementwise::sqrt,
        "Exp" => elementwise::exp,
        "Identity" => elementwise::identity,
        "Cast" => elementwise::cast,
        "Relu" => activations::relu,
        "Sigmoid" => activations::sigmoid,
        "Tanh" => activations::tanh,
        "Erf" => activations::erf,
        "Abs" => activations::abs,
        "LeakyRelu" => activations::leaky_relu,
        "HardSigmoid" => activations::hard_sigmoid,
        "HardSwish" => activations::hard_swish,
        "Gelu" => activations::gelu,
        "MatMul" => matmul::matmul,
        "Gemm" => matmul::gemm_grad,
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => shape_ops::reshape_like,
        "Transpose" => shape_ops::transpose,
        "Concat" => shape_ops::concat,
        "Slice" => shape_ops::slice,
        "Gather" => shape_ops::gather,
        "Expand" => shape_ops::expand,
        "Split" => shape_ops::split,
        "ReduceSum" => reduce::reduce_sum,
        "ReduceMean" => reduce::reduce_mean,
        "Conv" => conv::conv,
        "GlobalAveragePool" => pool::global_average_pool,
        "AveragePool" => pool::average_pool,
        "MaxPool" => pool::max_pool,
        "BatchNormalization" => norm::batch_normalization,
        "LayerNormalization" => norm::layer_normalization,
        "Clip" => regularize::clip,
        "Dropout" => regularize::dropout,
        "Softmax" => softmax::softmax,
        "LogSoftmax" => softmax::log_softmax,
        "Shape" | "Size" | "Constant" | "ConstantOfShape" | "Equal" | "Less" | "Greater"
        | "LessOrEqual" | "GreaterOrEqual" | "Not" | "And" | "Or" | "Xor" | "ArgMax" | "ArgMin"
        | "Range" => non_differentiable,
        _ => return None,
    })
}

/// Ops whose outputs are integers, booleans or constants: no gradient flows through them.
fn non_differentiable(_: &mut GradCtx, a: &RuleArgs) -> Result<Vec<Option<String>>, String> {
    Ok(vec![None; a.node.input.len()])
}

/// `Some(grad)` at `slot` of an all-`None` vector of `n` entries.
fn only(n: usize, slot: usize, grad: String) -> Vec<Option<String>> {
    let mut v = vec![None; n];
    v[slot] = Some(grad);
    v
}
