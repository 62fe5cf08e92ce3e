//! The eval model's BatchNormalization and Dropout run in inference mode: `training_mode` removed, only the
//! first output kept (the running-statistics and mask outputs of training-mode exports are dropped).

use crate::ir::Graph;
use crate::pass::{Changed, Pass, PassError};

pub struct InferenceMode;

impl Pass for InferenceMode {
    fn name(&self) -> &'static str {
        "inference-mode"
    }

    fn run(&mut self, g: &mut Graph) -> Result<Changed, PassError> {
        let targets: Vec<_> = g
            .nodes()
            .filter(|(_, n)| matches!(n.op_type(), "BatchNormalization" | "Dropout"))
            .map(|(i, _)| i)
            .collect();
        for &i in &targets {
            let n = g.node(i);
            let read = n
                .output
                .iter()
                .skip(1)
                .find(|o| !o.is_empty() && g.readers(o).next().is_some());
            if let Some(o) = read {
                return Err(PassError::Invalid {
                    pass: self.name(),
                    message: format!(
                        "node '{}': its training-mode output '{o}' is read by other nodes",
                        n.name()
                    ),
                });
            }
            g.update_node(i, |n| {
                n.output.truncate(1);
                if n.op_type() == "BatchNormalization" {
                    n.attribute.retain(|a| a.name() != "training_mode");
                } else {
                    n.input.truncate(2);
                }
            })?;
        }
        Ok(Changed::from(!targets.is_empty()))
    }
}
