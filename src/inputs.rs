//! Input shapes read from a model, and seeded random inputs for them.

use rand::{rngs::StdRng, Rng, SeedableRng};
use rl_passes::onnx::{
    tensor_shape_proto::dimension::Value as Dim, type_proto::Value as Type, ModelProto,
};

use crate::engine::HostTensor;

/// Data inputs of the model (initializers listed as inputs excluded) with symbolic dims set to `batch`.
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
                Some(Type::TensorType(t)) => t
                    .shape
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
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            (i.name().to_owned(), dims)
        })
        .collect()
}

/// Standard-normal-ish inputs (uniform in [-1, 1)) from a seed: the same seed gives the same tensors.
pub fn random_inputs(shapes: &[(String, Vec<usize>)], seed: u64) -> Vec<(String, HostTensor)> {
    let mut rng = StdRng::seed_from_u64(seed);
    shapes
        .iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            let data = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            (
                name.clone(),
                HostTensor {
                    shape: shape.clone(),
                    data,
                },
            )
        })
        .collect()
}
