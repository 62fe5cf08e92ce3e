//! Every Dropout of the step model runs in training mode: its `training_mode` input becomes a constant `true`
//! (one shared boolean initializer) and it gets a mask output when it has none (the gradient rule multiplies
//! by the mask). The ratio stays the node's own (default 0.5).

use crate::ir::Graph;
use crate::onnx::{tensor_proto::DataType, TensorProto};
use crate::pass::{Changed, Pass, PassError};

pub struct DropoutTrainingMode {
    /// Name of the boolean initializer the nodes read as `training_mode`.
    pub flag: &'static str,
}

impl Pass for DropoutTrainingMode {
    fn name(&self) -> &'static str {
        "dropout-training-mode"
    }

    fn run(&mut self, g: &mut Graph) -> Result<Changed, PassError> {
        let targets = g.indices_of_op("Dropout");
        if targets.is_empty() {
            return Ok(Changed::No);
        }
        if g.producer(self.flag).is_some() {
            return Err(PassError::Invalid {
                pass: self.name(),
                message: format!(
                    "the name '{}' that the training model needs is already used in the model",
                    self.flag
                ),
            });
        }
        g.add_initializer(TensorProto {
            name: Some(self.flag.to_owned()),
            data_type: Some(DataType::Bool as i32),
            raw_data: Some(bytes::Bytes::from(vec![1u8])),
            ..Default::default()
        });
        for &i in &targets {
            let n = g.node(i);
            let mask = if n.output.get(1).is_some_and(|m| !m.is_empty()) {
                None
            } else {
                Some(g.fresh_name(&format!("{}.mask", n.output[0])))
            };
            g.update_node(i, |n| {
                n.input.resize(2, String::new());
                n.input.push(self.flag.to_owned());
                if let Some(m) = mask {
                    n.output.resize(1, String::new());
                    n.output.push(m);
                }
            })?;
        }
        Ok(Changed::Yes)
    }
}
