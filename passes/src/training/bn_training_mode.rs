//! Sets `training_mode = 1` on every BatchNormalization, before differentiation (see [`super::batchnorm`]:
//! the autodiff's rule for a training-mode node emits the compact backward). Checked beforehand by
//! [`super::batchnorm::running_statistics`].

use super::builder::A;
use crate::ir::Graph;
use crate::pass::{Changed, Pass, PassError};

pub struct BatchNormTrainingMode;

impl Pass for BatchNormTrainingMode {
    fn name(&self) -> &'static str {
        "batchnorm-training-mode"
    }

    fn run(&mut self, g: &mut Graph) -> Result<Changed, PassError> {
        let targets = g.indices_of_op("BatchNormalization");
        for &i in &targets {
            g.set_attribute(i, A::Int(1).into_proto("training_mode"))?;
        }
        Ok(Changed::from(!targets.is_empty()))
    }
}
