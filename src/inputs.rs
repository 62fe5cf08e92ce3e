//! Input types and shapes read from a model, and seeded random inputs for them.

use rand::{rngs::StdRng, Rng, SeedableRng};
use rl_passes::onnx::{
    tensor_shape_proto::dimension::Value as Dim, type_proto, type_proto::Value as Type, ModelProto,
};

use crate::engine::{ElementType, HostTensor, InputFact};

#[derive(Debug, thiserror::Error)]
#[error(
    "input '{input}' is {elem}, which rl-rewrite cannot feed; only float32 and int64 tensor inputs are \
     supported"
)]
pub struct UnsupportedInput {
    pub input: String,
    pub elem: String,
}

/// Data inputs of the model (initializers listed as inputs excluded) with their element types, symbolic dims
/// set to `batch`.
pub fn input_facts(model: &ModelProto, batch: usize) -> Result<Vec<InputFact>, UnsupportedInput> {
    let Some(g) = &model.graph else {
        return Ok(Vec::new());
    };
    let inits: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    g.input
        .iter()
        .filter(|i| !inits.contains(i.name()))
        .map(|i| {
            let tensor = match i.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(Type::TensorType(t)) => t,
                other => {
                    return Err(UnsupportedInput {
                        input: i.name().to_owned(),
                        elem: match other {
                            None => "untyped".to_owned(),
                            Some(_) => "not a tensor".to_owned(),
                        },
                    })
                }
            };
            let element_type =
                ElementType::from_onnx(tensor.elem_type()).ok_or_else(|| UnsupportedInput {
                    input: i.name().to_owned(),
                    elem: format!("of ONNX element type {}", tensor.elem_type()),
                })?;
            let shape = declared_dims(tensor, batch);
            Ok(InputFact {
                name: i.name().to_owned(),
                element_type,
                shape,
            })
        })
        .collect()
}

/// Data inputs' names and shapes (symbolic dims set to `batch`), whatever their element types.
pub fn input_shapes(model: &ModelProto, batch: usize) -> Vec<(String, Vec<usize>)> {
    let Some(g) = &model.graph else {
        return Vec::new();
    };
    let inits: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    g.input
        .iter()
        .filter(|i| !inits.contains(i.name()))
        .map(|i| {
            let dims = match i.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(Type::TensorType(t)) => declared_dims(t, batch),
                _ => Vec::new(),
            };
            (i.name().to_owned(), dims)
        })
        .collect()
}

/// A tensor type's dims, symbolic or unknown ones set to `batch`.
fn declared_dims(t: &type_proto::Tensor, batch: usize) -> Vec<usize> {
    t.shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(Dim::DimValue(v)) if *v > 0 => *v as usize,
                    _ => batch,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Seeded inputs: floats uniform in [-1, 1), integers 0 or 1 (valid class labels and indices for any model with
/// two or more classes). The same seed gives the same tensors.
pub fn random_inputs(facts: &[InputFact], seed: u64) -> Vec<(String, HostTensor)> {
    let mut rng = StdRng::seed_from_u64(seed);
    facts
        .iter()
        .map(|f| {
            let n = f.shape.iter().product();
            let t = match f.element_type {
                ElementType::F32 => HostTensor::f32(
                    f.shape.clone(),
                    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
                ),
                ElementType::I64 => HostTensor::i64(
                    f.shape.clone(),
                    (0..n).map(|_| rng.random_range(0i64..2)).collect(),
                ),
            };
            (f.name.clone(), t)
        })
        .collect()
}

/// Float32 inputs of the given shapes (all inputs float), for models known to take images only.
pub fn float_facts(shapes: &[(String, Vec<usize>)]) -> Vec<InputFact> {
    shapes
        .iter()
        .map(|(name, shape)| InputFact {
            name: name.clone(),
            element_type: ElementType::F32,
            shape: shape.clone(),
        })
        .collect()
}
