//! The error of training compilation, apart so that its passes and analyses and the composition in
//! [`super::step`] all use it without depending on each other.

use crate::analysis::shapes::ShapeError;
use crate::autodiff::AutodiffError;
use crate::contract::ContractError;
use crate::ir::GraphError;
use crate::pass::PassError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error(transparent)]
    Autodiff(#[from] AutodiffError),
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error(transparent)]
    Contract(#[from] ContractError),
    #[error("{0}")]
    Option(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("the name '{0}' that the training model needs is already used in the model")]
    NameClash(String),
}
