//! The pass interface: a named transformation of the IR that reports whether it changed anything.

use crate::ir::{Graph, GraphError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Yes,
    No,
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("pass {pass}: {message}")]
    Invalid { pass: &'static str, message: String },
}

pub trait Pass {
    fn name(&self) -> &'static str;
    fn run(&mut self, graph: &mut Graph) -> Result<Changed, PassError>;
}

/// Runs passes in order; returns the names of those that changed the graph.
pub fn run_pipeline(
    graph: &mut Graph,
    passes: &mut [&mut dyn Pass],
) -> Result<Vec<&'static str>, PassError> {
    let mut changed = Vec::new();
    for pass in passes.iter_mut() {
        if pass.run(graph)? == Changed::Yes {
            changed.push(pass.name());
        }
    }
    Ok(changed)
}
