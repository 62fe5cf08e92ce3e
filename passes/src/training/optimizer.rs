//! Optimizer updates as graph nodes: SGD (momentum, Nesterov, coupled weight decay, as `torch.optim.SGD`) and
//! AdamW (decoupled weight decay and bias correction, as `torch.optim.AdamW`). The learning rate is the graph
//! input `lr` (float32 scalar, cast to the parameters' type where it differs), so schedules need no
//! recompilation.
//!
//! SGD, for a parameter `p` with gradient `g` (`λ` = weight decay where it applies, else 0):
//! `d = g + λ·p`; with momentum μ > 0, `v' = μ·v + d` (state `p.momentum`, zeros at first, so the first step
//! equals PyTorch's `v = d`) and `d = v'`, or `d + μ·v'` with Nesterov; `p' = p − lr·d`.
//!
//! AdamW: `t' = t + 1` (one shared float scalar state `adamw.step`), `m' = β1·m + (1−β1)·g`,
//! `v' = β2·v + (1−β2)·g²` (states `p.exp_avg`, `p.exp_avg_sq`), `m̂ = m'/(1−β1^t')`, `v̂ = v'/(1−β2^t')`,
//! `p' = p − lr·(m̂/(√v̂ + ε) + λ·p)`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::builder::Builder;
use crate::onnx::tensor_proto::DataType;

/// `torch.optim.AdamW`'s default β1, β2.
pub const ADAMW_BETAS: (f64, f64) = (0.9, 0.999);
/// `torch.optim.AdamW`'s default ε.
pub const ADAMW_EPS: f64 = 1e-8;
/// `torch.optim.AdamW`'s default (decoupled) weight decay.
pub const ADAMW_WEIGHT_DECAY: f64 = 0.01;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    Sgd {
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    },
    #[serde(rename = "adamw")]
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

impl Optimizer {
    pub fn sgd(momentum: f64, nesterov: bool, weight_decay: f64) -> Optimizer {
        Optimizer::Sgd {
            momentum,
            nesterov,
            weight_decay,
        }
    }

    /// AdamW with PyTorch's defaults (β 0.9/0.999, ε 1e-8, weight decay 0.01).
    pub fn adamw() -> Optimizer {
        Optimizer::AdamW {
            beta1: ADAMW_BETAS.0,
            beta2: ADAMW_BETAS.1,
            eps: ADAMW_EPS,
            weight_decay: ADAMW_WEIGHT_DECAY,
        }
    }

    /// Checks the hyperparameters.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |n: &str, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("{n} must be finite (got {v})"))
            }
        };
        match *self {
            Optimizer::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => {
                finite("momentum", momentum)?;
                finite("weight decay", weight_decay)?;
                if momentum < 0.0 || weight_decay < 0.0 {
                    return Err("momentum and weight decay must be ≥ 0".into());
                }
                if nesterov && momentum == 0.0 {
                    return Err("Nesterov momentum needs a momentum > 0".into());
                }
            }
            Optimizer::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                for (n, v) in [("beta1", beta1), ("beta2", beta2)] {
                    finite(n, v)?;
                    if !(0.0..1.0).contains(&v) {
                        return Err(format!("{n} must be in [0, 1) (got {v})"));
                    }
                }
                finite("eps", eps)?;
                finite("weight decay", weight_decay)?;
                if eps <= 0.0 || weight_decay < 0.0 {
                    return Err("eps must be > 0 and weight decay ≥ 0".into());
                }
            }
        }
        Ok(())
    }
}

/// A parameter to update.
pub struct ParamUpdate {
    pub name: String,
    pub grad: String,
    pub dtype: i32,
    pub shape: Vec<usize>,
    /// Whether weight decay applies.
    pub decay: bool,
}

/// An optimizer state tensor: a step input `name`, output `name.next`, zeros at the start.
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensor {
    pub name: String,
    pub dtype: i32,
    pub shape: Vec<usize>,
}

/// The output name carrying the new value of a step-model input `x`.
pub fn next_name(x: &str) -> String {
    format!("{x}.next")
}

/// Metadata key on the node writing an AdamW-updated parameter (`p.next`), whose value is an [`AdamWNote`] in
/// JSON, so that an engine with a fused kernel can compute `p.next`, `m.next` and `v.next` in one pass.
pub const ADAMW_NOTE: &str = "rl_rewrite.adamw";

/// One parameter's AdamW update as emitted here: with `g` = `grad`, `m` = `exp_avg`, `v` = `exp_avg_sq`,
/// `m' = m·β1 + g·(1−β1)`, `v' = v·β2 + (g·g)·(1−β2)`, `p' = p − lr·((m'/bc1) / (√(v'/bc2) + ε) + p·λ)`, each
/// operation rounded to the parameter's type in this order (the λ term only when `weight_decay` ≠ 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWNote {
    pub param: String,
    pub grad: String,
    pub exp_avg: String,
    pub exp_avg_sq: String,
    /// The learning rate (a scalar of the parameter's type).
    pub lr: String,
    /// `1 − β1^t` and `1 − β2^t` (scalars of the parameter's type).
    pub bias_correction1: String,
    pub bias_correction2: String,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// 0 where weight decay does not apply to this parameter.
    pub weight_decay: f64,
}

/// Name of AdamW's shared step-count state.
pub const ADAMW_STEP: &str = "adamw.step";

/// Emits the updates, writing `{p}.next` for each parameter and `{s}.next` for each state; returns the state
/// tensors (inputs of the step model).
pub fn emit_updates(
    b: &mut Builder,
    opt: &Optimizer,
    lr: &str,
    params: &[ParamUpdate],
) -> Vec<StateTensor> {
    let mut lr_of: HashMap<i32, String> = HashMap::new();
    let mut lr_for = |b: &mut Builder, dtype: i32| -> String {
        if dtype == DataType::Float as i32 {
            return lr.to_owned();
        }
        lr_of
            .entry(dtype)
            .or_insert_with(|| {
                b.op(
                    "Cast",
                    &[lr],
                    vec![("to", super::builder::A::Int(dtype as i64))],
                )
            })
            .clone()
    };
    let mut states = Vec::new();
    match *opt {
        Optimizer::Sgd {
            momentum,
            nesterov,
            weight_decay,
        } => {
            for p in params {
                let mut d = p.grad.clone();
                if p.decay && weight_decay != 0.0 {
                    let wd = b.scalar(p.dtype, weight_decay);
                    let dp = b.op("Mul", &[&p.name, &wd], vec![]);
                    d = b.op("Add", &[&d, &dp], vec![]);
                }
                if momentum != 0.0 {
                    let v = format!("{}.momentum", p.name);
                    let mu = b.scalar(p.dtype, momentum);
                    let mv = b.op("Mul", &[&v, &mu], vec![]);
                    let v_next = b.op_to("Add", &[&mv, &d], vec![], Some(&next_name(&v)));
                    d = if nesterov {
                        let mv2 = b.op("Mul", &[&v_next, &mu], vec![]);
                        b.op("Add", &[&d, &mv2], vec![])
                    } else {
                        v_next
                    };
                    states.push(StateTensor {
                        name: v,
                        dtype: p.dtype,
                        shape: p.shape.clone(),
                    });
                }
                let lr = lr_for(b, p.dtype);
                let step = b.op("Mul", &[&lr, &d], vec![]);
                b.op_to("Sub", &[&p.name, &step], vec![], Some(&next_name(&p.name)));
            }
        }
        Optimizer::AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
        } => {
            let Some(first) = params.first() else {
                return states;
            };
            let sdtype = first.dtype;
            let one = b.scalar(sdtype, 1.0);
            let t_next = b.op_to(
                "Add",
                &[ADAMW_STEP, &one],
                vec![],
                Some(&next_name(ADAMW_STEP)),
            );
            states.push(StateTensor {
                name: ADAMW_STEP.to_owned(),
                dtype: sdtype,
                shape: vec![],
            });
            let mut corrections: HashMap<i32, (String, String)> = HashMap::new();
            for p in params {
                let (bc1, bc2) = corrections
                    .entry(p.dtype)
                    .or_insert_with(|| {
                        let t = if p.dtype == sdtype {
                            t_next.clone()
                        } else {
                            b.op(
                                "Cast",
                                &[&t_next],
                                vec![("to", super::builder::A::Int(p.dtype as i64))],
                            )
                        };
                        let one = b.scalar(p.dtype, 1.0);
                        let mut bc = |beta: f64| {
                            let bt = b.scalar(p.dtype, beta);
                            let pw = b.op("Pow", &[&bt, &t], vec![]);
                            b.op("Sub", &[&one, &pw], vec![])
                        };
                        (bc(beta1), bc(beta2))
                    })
                    .clone();
                let (m, v) = (
                    format!("{}.exp_avg", p.name),
                    format!("{}.exp_avg_sq", p.name),
                );
                let b1 = b.scalar(p.dtype, beta1);
                let c1 = b.scalar(p.dtype, 1.0 - beta1);
                let b2 = b.scalar(p.dtype, beta2);
                let c2 = b.scalar(p.dtype, 1.0 - beta2);
                let mb = b.op("Mul", &[&m, &b1], vec![]);
                let gb = b.op("Mul", &[&p.grad, &c1], vec![]);
                let m_next = b.op_to("Add", &[&mb, &gb], vec![], Some(&next_name(&m)));
                let vb = b.op("Mul", &[&v, &b2], vec![]);
                let g2 = b.op("Mul", &[&p.grad, &p.grad], vec![]);
                let g2b = b.op("Mul", &[&g2, &c2], vec![]);
                let v_next = b.op_to("Add", &[&vb, &g2b], vec![], Some(&next_name(&v)));
                let m_hat = b.op("Div", &[&m_next, &bc1], vec![]);
                let v_hat = b.op("Div", &[&v_next, &bc2], vec![]);
                let root = b.op("Sqrt", &[&v_hat], vec![]);
                let e = b.scalar(p.dtype, eps);
                let denom = b.op("Add", &[&root, &e], vec![]);
                let mut upd = b.op("Div", &[&m_hat, &denom], vec![]);
                let decay = if p.decay { weight_decay } else { 0.0 };
                if decay != 0.0 {
                    let wd = b.scalar(p.dtype, decay);
                    let dp = b.op("Mul", &[&p.name, &wd], vec![]);
                    upd = b.op("Add", &[&upd, &dp], vec![]);
                }
                let lr = lr_for(b, p.dtype);
                let step = b.op("Mul", &[&lr, &upd], vec![]);
                let p_next = b.op_to("Sub", &[&p.name, &step], vec![], Some(&next_name(&p.name)));
                let note = AdamWNote {
                    param: p.name.clone(),
                    grad: p.grad.clone(),
                    exp_avg: m.clone(),
                    exp_avg_sq: v.clone(),
                    lr,
                    bias_correction1: bc1.clone(),
                    bias_correction2: bc2.clone(),
                    beta1,
                    beta2,
                    eps,
                    weight_decay: decay,
                };
                let note = serde_json::to_string(&note).expect("plain data serializes");
                b.annotate(&p_next, ADAMW_NOTE, note);
                for s in [m, v] {
                    states.push(StateTensor {
                        name: s,
                        dtype: p.dtype,
                        shape: p.shape.clone(),
                    });
                }
            }
        }
    }
    states
}

/// `SGD (momentum 0.9, Nesterov, weight decay 0.0005)`, `AdamW (β 0.9/0.999, ε 1e-8, weight decay 0.01)`.
impl std::fmt::Display for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Optimizer::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => write!(
                f,
                "SGD (momentum {momentum}{}, weight decay {weight_decay})",
                if *nesterov { ", Nesterov" } else { "" }
            ),
            Optimizer::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                write!(
                    f,
                    "AdamW (β {beta1}/{beta2}, ε {eps:e}, weight decay {weight_decay})"
                )
            }
        }
    }
}
