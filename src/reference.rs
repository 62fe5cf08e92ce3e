//! Reference models for equivalence checks: the original model with each replaced tensor overwritten by
//! `a·prev + b·next`, computed here on the host. A correct rewrite computes exactly this.

use rl_passes::onnx::ModelProto;
use rl_passes::plan::Plan;
use rl_passes::tensor::{f32_tensor, f32_values};

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("tensor '{0}' is not a float32 initializer of the original model; reference weights need one")]
    NotAnInitializer(String),
}

/// The original model with every planned tensor set to `a·prev + b·next` (float32 arithmetic, as engines do).
pub fn with_integrated_weights(
    original: &ModelProto,
    plan: &Plan,
    a: f32,
    b: f32,
) -> Result<ModelProto, ReferenceError> {
    let mut model = original.clone();
    let graph = model.graph.as_mut().expect("models carry a graph");
    let find = |name: &str| {
        graph
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .and_then(f32_values)
            .ok_or_else(|| ReferenceError::NotAnInitializer(name.to_owned()))
    };
    let mut updates = Vec::new();
    for unit in &plan.frozen {
        for p in &unit.params {
            let (prev, next) = (find(&p.prev)?, find(&p.next)?);
            let values: Vec<f32> = prev.iter().zip(&next).map(|(x, y)| a * x + b * y).collect();
            updates.push((p.tensor.clone(), values));
        }
    }
    for (name, values) in updates {
        let t = graph
            .initializer
            .iter_mut()
            .find(|t| t.name() == name)
            .ok_or_else(|| ReferenceError::NotAnInitializer(name.clone()))?;
        let fresh = f32_tensor(&name, &t.dims, &values);
        t.raw_data = fresh.raw_data;
        t.float_data.clear();
    }
    Ok(model)
}
