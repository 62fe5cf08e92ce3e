//! The pass interface and the one driver that runs passes.
//!
//! A pass is a named transformation of the IR that reports whether it changed anything; it edits the graph
//! only through the IR's operations, which keep producers, readers and edges right as they go (see
//! [`crate::ir`]). The [`Driver`] runs passes in order, checks after each that nothing it left dangles, keeps
//! the names of those that changed the graph, and runs cleanups (constant folding, common-subexpression and
//! dead-code elimination) until they no longer change anything.

use crate::ir::{Graph, GraphError};
use crate::passes::{CommonSubexpressionElimination, ConstantFolding, DeadCodeElimination};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Yes,
    No,
}

impl From<bool> for Changed {
    fn from(changed: bool) -> Changed {
        if changed {
            Changed::Yes
        } else {
            Changed::No
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("pass {pass}: {message}")]
    Invalid { pass: &'static str, message: String },
    #[error("pass {pass} left the graph invalid: {source}")]
    LeftInvalid {
        pass: &'static str,
        source: GraphError,
    },
    #[error("passes {still_changing:?} still changed the graph after {rounds} rounds; they do not settle")]
    NoFixpoint {
        rounds: usize,
        still_changing: Vec<&'static str>,
    },
}

pub trait Pass {
    fn name(&self) -> &'static str;
    fn run(&mut self, graph: &mut Graph) -> Result<Changed, PassError>;
}

/// Rounds of [`Driver::cleanup`] before it gives up. Each round after the first only finds what the others'
/// edits of the round before exposed, so real graphs settle in two or three.
pub const MAX_CLEANUP_ROUNDS: usize = 8;

/// Runs passes and remembers which changed the graph.
#[derive(Debug, Default)]
pub struct Driver {
    changed: Vec<&'static str>,
}

impl Driver {
    pub fn new() -> Driver {
        Driver::default()
    }

    /// Names of the passes that changed the graph, in the order they ran (once per run that changed it).
    pub fn changed(&self) -> &[&'static str] {
        &self.changed
    }

    /// Runs one pass, then checks that it left no read without a producer.
    pub fn run(&mut self, graph: &mut Graph, pass: &mut dyn Pass) -> Result<Changed, PassError> {
        let changed = pass.run(graph)?;
        graph.validate().map_err(|source| PassError::LeftInvalid {
            pass: pass.name(),
            source,
        })?;
        if changed == Changed::Yes {
            self.changed.push(pass.name());
        }
        Ok(changed)
    }

    /// Runs the passes once each, in order; whether any changed the graph.
    pub fn run_all(
        &mut self,
        graph: &mut Graph,
        passes: &mut [&mut dyn Pass],
    ) -> Result<Changed, PassError> {
        let mut any = Changed::No;
        for pass in passes.iter_mut() {
            if self.run(graph, &mut **pass)? == Changed::Yes {
                any = Changed::Yes;
            }
        }
        Ok(any)
    }

    /// Runs the passes in turn until each has run on the graph as it now is without changing it, at most
    /// `max_rounds` times over the list; returns the rounds started.
    pub fn run_to_fixpoint(
        &mut self,
        graph: &mut Graph,
        passes: &mut [&mut dyn Pass],
        max_rounds: usize,
    ) -> Result<usize, PassError> {
        if passes.is_empty() {
            return Ok(0);
        }
        let count = passes.len();
        // Runs in a row that changed nothing: once every pass is among them, none has anything left to do.
        let mut quiet = 0;
        let mut still_changing = Vec::new();
        for round in 1..=max_rounds {
            still_changing.clear();
            for pass in passes.iter_mut() {
                if self.run(graph, &mut **pass)? == Changed::Yes {
                    still_changing.push(pass.name());
                    quiet = 0;
                } else {
                    quiet += 1;
                }
                if quiet == count {
                    return Ok(round);
                }
            }
        }
        Err(PassError::NoFixpoint {
            rounds: max_rounds,
            still_changing,
        })
    }

    /// Constant folding (for data inputs of the given shapes), common-subexpression and dead-code
    /// elimination, to a fixpoint.
    pub fn cleanup(
        &mut self,
        graph: &mut Graph,
        input_shapes: Vec<(String, Vec<usize>)>,
    ) -> Result<usize, PassError> {
        let mut fold = ConstantFolding {
            inputs: input_shapes,
        };
        let mut cse = CommonSubexpressionElimination;
        let mut dce = DeadCodeElimination;
        self.run_to_fixpoint(
            graph,
            &mut [&mut fold, &mut cse, &mut dce],
            MAX_CLEANUP_ROUNDS,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{GraphProto, ModelProto, NodeProto, ValueInfoProto};

    fn graph() -> Graph {
        let vi = |n: &str| ValueInfoProto {
            name: Some(n.into()),
            ..Default::default()
        };
        Graph::lift(ModelProto {
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    op_type: Some("Relu".into()),
                    input: vec!["x".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                }],
                input: vec![vi("x")],
                output: vec![vi("y")],
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap()
    }

    /// Reports a change (without making one) on all but the last of its first `times` runs.
    struct Restless {
        times: usize,
    }

    impl Pass for Restless {
        fn name(&self) -> &'static str {
            "restless"
        }
        fn run(&mut self, _: &mut Graph) -> Result<Changed, PassError> {
            self.times = self.times.saturating_sub(1);
            Ok(Changed::from(self.times > 0))
        }
    }

    /// Removes every node: leaves the graph output without a producer.
    struct Vandal;

    impl Pass for Vandal {
        fn name(&self) -> &'static str {
            "vandal"
        }
        fn run(&mut self, g: &mut Graph) -> Result<Changed, PassError> {
            let all: Vec<_> = g.node_indices().collect();
            Ok(Changed::from(g.prune(all, vec![])))
        }
    }

    #[test]
    fn fixpoint_stops_once_every_pass_is_quiet() {
        let mut g = graph();
        let (mut a, mut b) = (Restless { times: 3 }, Restless { times: 1 });
        let mut driver = Driver::new();
        let rounds = driver
            .run_to_fixpoint(&mut g, &mut [&mut a, &mut b], 5)
            .unwrap();
        assert_eq!(rounds, 3);
        assert_eq!(driver.changed(), ["restless", "restless"]);
    }

    #[test]
    fn a_fixpoint_not_reached_is_an_error() {
        let mut g = graph();
        let mut a = Restless { times: 100 };
        let err = Driver::new()
            .run_to_fixpoint(&mut g, &mut [&mut a], 4)
            .unwrap_err();
        assert!(
            matches!(&err, PassError::NoFixpoint { rounds: 4, still_changing } if still_changing == &["restless"]),
            "{err}"
        );
    }

    #[test]
    fn a_pass_leaving_a_dangling_value_is_named() {
        let mut g = graph();
        let err = Driver::new().run(&mut g, &mut Vandal).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pass vandal left the graph invalid: graph output 'y' is produced by nothing"
        );
    }
}
