//! The Replacement Learning contract: the names and metadata through which a rewritten model tells later
//! commands what the rewrite did.
//!
//! The rewrite writes them; compile-train, bake, check and diff read them back, possibly from a model saved
//! by an earlier run, so each is spelled here once:
//!
//! - model metadata [`PLAN_KEY`]: the [`Plan`] as JSON, on a rewritten model;
//! - model metadata [`MANIFEST_KEY`]: the [`TrainManifest`] as JSON, on a training-step model;
//! - a frozen unit's two scalars `<unit>.rl_a` and `<unit>.rl_b` ([`scalar_name`]);
//! - for each replaced tensor `T`, its integration subgraph ([`IntegrationNames`]):
//!   node `T/rl_mul_a` computes `T/rl_a_prev = a·prev`, node `T/rl_mul_b` computes `T/rl_b_next = b·next`,
//!   and node `T/rl_add` adds them into `T` itself, so no consumer of `T` changes.

use crate::onnx::{ModelProto, StringStringEntryProto};
use crate::plan::Plan;
use crate::training::TrainManifest;

/// Model metadata key of the Replacement Learning plan (JSON).
pub const PLAN_KEY: &str = "replacement_learning.plan";
/// Model metadata key of a training-step model's manifest (JSON).
pub const MANIFEST_KEY: &str = "replacement_learning.train";

/// Whether `key` is one of the metadata keys this contract writes (machine-written JSON, not for display).
pub fn is_contract_key(key: &str) -> bool {
    key == PLAN_KEY || key == MANIFEST_KEY
}

/// One of a frozen unit's two learnable scalars, θ = a·θ_prev + b·θ_next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scalar {
    A,
    B,
}

impl Scalar {
    fn suffix(self) -> &'static str {
        match self {
            Scalar::A => ".rl_a",
            Scalar::B => ".rl_b",
        }
    }
}

/// The name a frozen unit's scalar gets: `<unit>.rl_a` or `<unit>.rl_b`. When that name is taken, the
/// rewrite appends `.<k>` (see [`parse_scalar_name`]).
pub fn scalar_name(unit: &str, which: Scalar) -> String {
    format!("{unit}{}", which.suffix())
}

/// Recognises a scalar name made by [`scalar_name`], with or without the `.<k>` suffixes that make it
/// unique: the unit and which scalar.
pub fn parse_scalar_name(name: &str) -> Option<(&str, Scalar)> {
    let mut rest = name;
    loop {
        for which in [Scalar::A, Scalar::B] {
            if let Some(unit) = rest.strip_suffix(which.suffix()).filter(|u| !u.is_empty()) {
                return Some((unit, which));
            }
        }
        // Drop one `.<digits>` uniqueness suffix and try again.
        let (head, tail) = rest.rsplit_once('.')?;
        if tail.is_empty() || !tail.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        rest = head;
    }
}

/// One of the three nodes of a replaced tensor's integration subgraph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegrationNode {
    /// `Mul(a, prev)`.
    MulA,
    /// `Mul(b, next)`.
    MulB,
    /// `Add` of the two products, producing the replaced tensor.
    Add,
}

impl IntegrationNode {
    pub const ALL: [IntegrationNode; 3] = [
        IntegrationNode::MulA,
        IntegrationNode::MulB,
        IntegrationNode::Add,
    ];

    fn suffix(self) -> &'static str {
        match self {
            IntegrationNode::MulA => "/rl_mul_a",
            IntegrationNode::MulB => "/rl_mul_b",
            IntegrationNode::Add => "/rl_add",
        }
    }

    /// This node's name in the integration subgraph of `tensor`.
    pub fn name(self, tensor: &str) -> String {
        format!("{tensor}{}", self.suffix())
    }
}

/// Recognises an integration node name: the replaced tensor and which node it is.
pub fn parse_integration_node(name: &str) -> Option<(&str, IntegrationNode)> {
    IntegrationNode::ALL.into_iter().find_map(|node| {
        name.strip_suffix(node.suffix())
            .filter(|tensor| !tensor.is_empty())
            .map(|tensor| (tensor, node))
    })
}

/// Node and value names of the integration subgraph that computes the replaced tensor `tensor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationNames {
    pub mul_a: String,
    pub mul_b: String,
    pub add: String,
    /// Output of `mul_a`.
    pub a_prev: String,
    /// Output of `mul_b`.
    pub b_next: String,
}

impl IntegrationNames {
    pub fn of(tensor: &str) -> IntegrationNames {
        IntegrationNames {
            mul_a: IntegrationNode::MulA.name(tensor),
            mul_b: IntegrationNode::MulB.name(tensor),
            add: IntegrationNode::Add.name(tensor),
            a_prev: format!("{tensor}/rl_a_prev"),
            b_next: format!("{tensor}/rl_b_next"),
        }
    }

    /// The three node names, in the order the rewrite emits them.
    pub fn nodes(&self) -> [&str; 3] {
        [&self.mul_a, &self.mul_b, &self.add]
    }
}

/// A metadata entry of the contract that is missing or cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("the model has no '{key}' metadata ({what}); {remedy}")]
    Missing {
        key: &'static str,
        what: &'static str,
        remedy: &'static str,
    },
    #[error("the model's '{key}' metadata is not a valid {what}: {reason}; {remedy}")]
    Invalid {
        key: &'static str,
        what: &'static str,
        reason: serde_json::Error,
        remedy: &'static str,
    },
}

/// How one metadata entry of the contract is named and what to do when it is unusable.
struct Entry {
    key: &'static str,
    what: &'static str,
    if_missing: &'static str,
    if_invalid: &'static str,
}

const PLAN: Entry = Entry {
    key: PLAN_KEY,
    what: "Replacement Learning plan",
    if_missing:
        "only a model written by `rl-rewrite MODEL` carries one: rewrite the original model first",
    if_invalid:
        "it was edited or written by an incompatible version: rewrite the original model again",
};

const MANIFEST: Entry = Entry {
    key: MANIFEST_KEY,
    what: "training-step manifest",
    if_missing:
        "only a step model written by `rl-rewrite compile-train` carries one: compile the model first",
    if_invalid: "it was edited or written by an incompatible version: run `rl-rewrite compile-train` again",
};

impl Entry {
    fn read<T: serde::de::DeserializeOwned>(
        &self,
        model: &ModelProto,
    ) -> Result<Option<T>, ContractError> {
        let Some(entry) = model.metadata_props.iter().find(|e| e.key() == self.key) else {
            return Ok(None);
        };
        serde_json::from_str(entry.value())
            .map(Some)
            .map_err(|reason| ContractError::Invalid {
                key: self.key,
                what: self.what,
                reason,
                remedy: self.if_invalid,
            })
    }

    fn require<T: serde::de::DeserializeOwned>(
        &self,
        model: &ModelProto,
    ) -> Result<T, ContractError> {
        self.read(model)?.ok_or(ContractError::Missing {
            key: self.key,
            what: self.what,
            remedy: self.if_missing,
        })
    }

    /// Replaces any entry under this key by one holding `json`, placed last.
    fn write(&self, model: &mut ModelProto, json: String) {
        self.remove(model);
        model
            .metadata_props
            .push(StringStringEntryProto::new(self.key, json));
    }

    fn remove(&self, model: &mut ModelProto) -> bool {
        let before = model.metadata_props.len();
        model.metadata_props.retain(|e| e.key() != self.key);
        model.metadata_props.len() != before
    }
}

/// The plan stored in a rewritten model's metadata; `None` when the model carries none.
pub fn read_plan(model: &ModelProto) -> Result<Option<Plan>, ContractError> {
    PLAN.read(model)
}

/// The plan stored in a rewritten model's metadata; a model without one is an error.
pub fn require_plan(model: &ModelProto) -> Result<Plan, ContractError> {
    PLAN.require(model)
}

/// Stores `plan` in the model's metadata (compact JSON), replacing any plan there.
pub fn write_plan(model: &mut ModelProto, plan: &Plan) {
    PLAN.write(model, serde_json::to_string(plan).expect("plans serialize"));
}

/// Removes the plan from the model's metadata; whether there was one.
pub fn remove_plan(model: &mut ModelProto) -> bool {
    PLAN.remove(model)
}

/// The manifest stored in a training-step model's metadata; `None` when the model carries none.
pub fn read_manifest(model: &ModelProto) -> Result<Option<TrainManifest>, ContractError> {
    MANIFEST.read(model)
}

/// The manifest stored in a training-step model's metadata; a model without one is an error.
pub fn require_manifest(model: &ModelProto) -> Result<TrainManifest, ContractError> {
    MANIFEST.require(model)
}

/// Stores `manifest` in the model's metadata (pretty JSON, as `--manifest` writes it), replacing any there.
pub fn write_manifest(model: &mut ModelProto, manifest: &TrainManifest) {
    MANIFEST.write(model, manifest.to_json());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::units::UnitKind;
    use crate::plan::{FrozenUnit, ReplacedParam};
    use crate::training::{ManifestTensor, Optimizer};

    fn plan() -> Plan {
        Plan {
            version: 1,
            unit: UnitKind::Block,
            every: 2,
            offset: 0,
            params_before: 100,
            params_after: 70,
            frozen: vec![FrozenUnit {
                unit: "layer1.1".into(),
                stage: 0,
                index: 2,
                a: scalar_name("layer1.1", Scalar::A),
                b: scalar_name("layer1.1", Scalar::B),
                params: vec![ReplacedParam {
                    tensor: "layer1.1.conv.weight".into(),
                    prev: "layer1.0.conv.weight".into(),
                    next: "layer1.2.conv.weight".into(),
                    shape: vec![4, 4, 3, 3],
                }],
                dtype: 0,
            }],
            tied: Vec::new(),
        }
    }

    fn manifest() -> TrainManifest {
        let tensor = |name: &str, decay| ManifestTensor {
            name: name.into(),
            next: format!("{name}.next"),
            dtype: "float32".into(),
            shape: vec![4],
            weight_decay: decay,
        };
        TrainManifest {
            input: "x".into(),
            labels: "labels".into(),
            lr: "lr".into(),
            loss: "loss".into(),
            correct: "correct".into(),
            batch_size: 8,
            label_smoothing: 0.1,
            optimizer: Optimizer::adamw(),
            detach_neighbours: true,
            bn_running_var: Default::default(),
            params: vec![
                tensor("w", Some(true)),
                tensor("layer1.1.rl_a", Some(false)),
            ],
            state: vec![tensor("w.exp_avg", None)],
            optimizer_state_tensors: 1,
        }
    }

    fn with_entry(key: &str, value: &str) -> ModelProto {
        ModelProto {
            metadata_props: vec![
                StringStringEntryProto::new("other", "kept"),
                StringStringEntryProto::new(key, value),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn plan_round_trips_through_metadata() {
        let mut model = with_entry(PLAN_KEY, "stale");
        write_plan(&mut model, &plan());
        let keys: Vec<&str> = model.metadata_props.iter().map(|e| e.key()).collect();
        assert_eq!(keys, ["other", PLAN_KEY], "one plan, placed last");
        assert_eq!(read_plan(&model).unwrap(), Some(plan()));
        assert_eq!(require_plan(&model).unwrap(), plan());
        assert!(remove_plan(&mut model));
        assert!(!remove_plan(&mut model));
        assert_eq!(read_plan(&model).unwrap(), None);
    }

    #[test]
    fn manifest_round_trips_through_metadata() {
        let mut model = ModelProto::default();
        write_manifest(&mut model, &manifest());
        assert_eq!(model.metadata_props[0].value(), manifest().to_json());
        assert_eq!(read_manifest(&model).unwrap(), Some(manifest()));
        assert_eq!(require_manifest(&model).unwrap(), manifest());
    }

    #[test]
    fn a_missing_entry_names_the_key_and_what_to_do() {
        let model = with_entry("unrelated", "{}");
        assert_eq!(read_plan(&model).unwrap(), None);
        let plan_err = require_plan(&model).unwrap_err().to_string();
        assert!(matches!(
            require_plan(&model),
            Err(ContractError::Missing { key: PLAN_KEY, .. })
        ));
        assert!(
            plan_err.contains("'replacement_learning.plan'"),
            "{plan_err}"
        );
        assert!(
            plan_err.contains("rewrite the original model"),
            "{plan_err}"
        );

        assert_eq!(read_manifest(&model).unwrap(), None);
        let manifest_err = require_manifest(&model).unwrap_err().to_string();
        assert!(
            manifest_err.contains("'replacement_learning.train'"),
            "{manifest_err}"
        );
        assert!(manifest_err.contains("compile-train"), "{manifest_err}");
    }

    #[test]
    fn an_unreadable_entry_names_the_key_the_problem_and_what_to_do() {
        let broken_plan = with_entry(PLAN_KEY, "{\"version\": 1");
        let err = read_plan(&broken_plan).unwrap_err();
        assert!(matches!(
            err,
            ContractError::Invalid {
                key: PLAN_KEY,
                what: "Replacement Learning plan",
                ..
            }
        ));
        let text = err.to_string();
        let expected = concat!(
            "the model's 'replacement_learning.plan' metadata is not a valid Replacement Learning plan: ",
            "EOF while parsing"
        );
        assert!(text.starts_with(expected), "{text}");
        assert!(text.ends_with("rewrite the original model again"), "{text}");

        let wrong_shape = with_entry(MANIFEST_KEY, "{\"input\": 3}");
        let text = require_manifest(&wrong_shape).unwrap_err().to_string();
        let expected = concat!(
            "the model's 'replacement_learning.train' metadata is not a valid training-step manifest: ",
            "invalid type"
        );
        assert!(text.starts_with(expected), "{text}");
        assert!(
            text.ends_with("run `rl-rewrite compile-train` again"),
            "{text}"
        );
    }

    #[test]
    fn integration_names_are_built_and_recognised() {
        let names = IntegrationNames::of("layer1.1.conv.weight");
        assert_eq!(
            names.nodes(),
            [
                "layer1.1.conv.weight/rl_mul_a",
                "layer1.1.conv.weight/rl_mul_b",
                "layer1.1.conv.weight/rl_add"
            ]
        );
        assert_eq!(names.a_prev, "layer1.1.conv.weight/rl_a_prev");
        assert_eq!(names.b_next, "layer1.1.conv.weight/rl_b_next");
        for (name, node) in names.nodes().into_iter().zip(IntegrationNode::ALL) {
            assert_eq!(
                parse_integration_node(name),
                Some(("layer1.1.conv.weight", node))
            );
        }
        for other in [
            "layer1.1.conv.weight",
            "/rl_add",
            "x/rl_add/1",
            "x/rl_a_prev",
            "x.rl_add",
        ] {
            assert_eq!(parse_integration_node(other), None, "{other}");
        }
    }

    #[test]
    fn scalar_names_are_built_and_recognised() {
        assert_eq!(scalar_name("blocks.1", Scalar::A), "blocks.1.rl_a");
        assert_eq!(scalar_name("blocks.1", Scalar::B), "blocks.1.rl_b");
        assert_eq!(
            parse_scalar_name("blocks.1.rl_a"),
            Some(("blocks.1", Scalar::A))
        );
        // Made unique by the rewrite: `.<stage>` and/or `.<k>` appended.
        assert_eq!(
            parse_scalar_name("blocks.1.rl_b.0.2"),
            Some(("blocks.1", Scalar::B))
        );
        for other in [
            "blocks.1",
            ".rl_a",
            "blocks.1.rl_a.x",
            "blocks.1.rl_ab",
            "w.rl_a.",
        ] {
            assert_eq!(parse_scalar_name(other), None, "{other}");
        }
        assert!(is_contract_key(PLAN_KEY) && is_contract_key(MANIFEST_KEY));
        assert!(!is_contract_key("replacement_learning"));
    }
}
