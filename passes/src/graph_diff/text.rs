//! The text rendering of a diff ([`fmt::Display`] for [`ModelDiff`]): one section per part of the model,
//! `+` added, `-` removed, `~` changed, and a one-line summary.

use std::fmt::{self, Write as _};

use super::describe::{op_label, quote, render_dims};
use super::digest::short;
use super::model::{
    Changes, Counts, FieldChange, IoDiff, MatchKind, MetaChange, MetaEntry, ModelDiff, NodeChange,
    NodeSummary, TensorSummary, ValueSummary,
};

impl fmt::Display for ModelDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_empty() {
            "models are equal"
        } else {
            "models differ"
        };
        writeln!(f, "{verdict}")?;
        section(
            f,
            "model",
            &self.model.iter().map(field_line).collect::<Vec<_>>(),
        )?;
        section(f, "opsets", &opset_lines(self))?;
        section(f, "metadata", &metadata_lines(&self.metadata.model))?;
        section(f, "graph metadata", &metadata_lines(&self.metadata.graph))?;
        section(f, "inputs", &io_lines(&self.inputs))?;
        section(f, "outputs", &io_lines(&self.outputs))?;
        section(f, "initializers", &initializer_lines(self))?;
        section(f, "nodes", &node_lines(self))?;
        section(f, "other", &other_lines(self))?;
        writeln!(f, "op histogram: {}", histogram(self))?;
        let s = &self.summary;
        writeln!(
            f,
            "summary: nodes {}; initializers {}; inputs {}; outputs {}; metadata {}; opsets {}",
            s.nodes, s.initializers, s.inputs, s.outputs, s.metadata, s.opsets
        )
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{} -{} ~{}", self.added, self.removed, self.changed)
    }
}

fn section(f: &mut fmt::Formatter<'_>, title: &str, lines: &[String]) -> fmt::Result {
    if lines.is_empty() {
        writeln!(f, "{title}: unchanged")
    } else {
        writeln!(f, "{title}:")?;
        lines.iter().try_for_each(|l| writeln!(f, "  {l}"))
    }
}

/// The lines of a keyed section: added items, removed items, then changed ones (each possibly followed by
/// detail lines).
fn change_lines<A, C>(
    changes: &Changes<A, C>,
    item: impl Fn(&A) -> String,
    change: impl Fn(&C) -> Vec<String>,
) -> Vec<String> {
    let mut lines = Vec::new();
    lines.extend(changes.added.iter().map(|a| format!("+ {}", item(a))));
    lines.extend(changes.removed.iter().map(|a| format!("- {}", item(a))));
    lines.extend(changes.changed.iter().flat_map(change));
    lines
}

fn opt_or_none(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(none)")
}

fn field_line(c: &FieldChange) -> String {
    format!(
        "~ {}: {} -> {}",
        c.field,
        opt_or_none(&c.from),
        opt_or_none(&c.to)
    )
}

fn domain_label(domain: &str) -> &str {
    if domain.is_empty() {
        "ai.onnx"
    } else {
        domain
    }
}

fn opset_lines(d: &ModelDiff) -> Vec<String> {
    change_lines(
        &d.opsets,
        |o| format!("{} {}", domain_label(&o.domain), o.version),
        |o| {
            vec![format!(
                "~ {} {} -> {}",
                domain_label(&o.domain),
                o.from,
                o.to
            )]
        },
    )
}

fn render_value_summary(v: &ValueSummary) -> String {
    match &v.value {
        Some(s) => format!("{s:?}"),
        None => format!("({} bytes, sha256:{})", v.len, short(&v.sha256)),
    }
}

fn metadata_lines(c: &Changes<MetaEntry, MetaChange>) -> Vec<String> {
    change_lines(
        c,
        |e| match &e.value.value {
            Some(_) => format!("{}: {}", e.key, render_value_summary(&e.value)),
            None => format!("{} {}", e.key, render_value_summary(&e.value)),
        },
        |ch| {
            vec![format!(
                "~ {}: {} -> {}",
                ch.key,
                render_value_summary(&ch.from),
                render_value_summary(&ch.to)
            )]
        },
    )
}

fn io_lines(d: &IoDiff) -> Vec<String> {
    let mut lines = Vec::new();
    lines.extend(d.added.iter().map(|e| format!("+ {}: {}", e.name, e.ty)));
    lines.extend(d.removed.iter().map(|e| format!("- {}: {}", e.name, e.ty)));
    lines.extend(
        d.changed
            .iter()
            .map(|c| format!("~ {}: {} -> {}", c.name, c.from, c.to)),
    );
    if let Some(o) = &d.order {
        lines.push(format!(
            "order: [{}] -> [{}]",
            o.from.join(", "),
            o.to.join(", ")
        ));
    }
    lines
}

/// `1.2 KiB` style size.
pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl TensorSummary {
    /// `float32[16,3,3,3] sha256:abcd1234 (1.7 KiB)`, without the name.
    pub(super) fn body(&self) -> String {
        let size = match (self.external, self.bytes) {
            (false, Some(n)) => human_bytes(n),
            (false, None) => "? B".to_owned(),
            (true, Some(n)) => format!("external, {}", human_bytes(n)),
            (true, None) => "external".to_owned(),
        };
        format!(
            "{}{} sha256:{} ({size})",
            self.dtype,
            render_dims(&self.dims),
            short(&self.sha256)
        )
    }
}

fn initializer_lines(d: &ModelDiff) -> Vec<String> {
    change_lines(
        &d.initializers,
        |t| format!("{}: {}", t.name, t.body()),
        |c| {
            vec![format!(
                "~ {}: {} -> {} [{}]",
                c.name,
                c.from.body(),
                c.to.body(),
                c.what.join(", ")
            )]
        },
    )
}

/// The node's name, or `#index` for an unnamed node.
fn node_ident(name: &str, index: usize) -> String {
    if name.is_empty() {
        format!("#{index}")
    } else {
        name.to_owned()
    }
}

/// `Op name (inputs) -> (outputs) {attributes}`.
fn node_line(n: &NodeSummary) -> String {
    let inputs: Vec<String> = n.inputs.iter().map(|s| quote(s)).collect();
    let outputs: Vec<String> = n.outputs.iter().map(|s| quote(s)).collect();
    let mut line = format!(
        "{} {} ({}) -> ({})",
        op_label(&n.domain, &n.op_type),
        node_ident(&n.name, n.index),
        inputs.join(", "),
        outputs.join(", ")
    );
    if !n.attributes.is_empty() {
        let attrs: Vec<String> = n
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = write!(line, " {{{}}}", attrs.join(", "));
    }
    line
}

/// `~ Op name`, then one indented line per changed field.
fn node_change_lines(c: &NodeChange) -> Vec<String> {
    let by = match c.matched_by {
        MatchKind::Name => "",
        MatchKind::Position => " (matched by position)",
    };
    let mut lines = vec![format!(
        "~ {} {}{by}",
        op_label(&c.domain, &c.op_type),
        node_ident(&c.name, c.b_index)
    )];
    lines.extend(c.details.iter().map(|d| {
        format!(
            "  {}: {} -> {}",
            d.field,
            opt_or_none(&d.from),
            opt_or_none(&d.to)
        )
    }));
    lines
}

fn node_lines(d: &ModelDiff) -> Vec<String> {
    change_lines(&d.nodes, node_line, node_change_lines)
}

fn other_lines(d: &ModelDiff) -> Vec<String> {
    d.other
        .iter()
        .map(|o| {
            format!(
                "~ {}: {} entries sha256:{} -> {} entries sha256:{}",
                o.field,
                o.from_count,
                short(&o.from_sha256),
                o.to_count,
                short(&o.to_sha256)
            )
        })
        .collect()
}

/// `Add -1, Mul +1`, or `unchanged`.
fn histogram(d: &ModelDiff) -> String {
    if d.histogram.is_empty() {
        return "unchanged".to_owned();
    }
    let items: Vec<String> = d
        .histogram
        .iter()
        .map(|(op, delta)| format!("{op} {delta:+}"))
        .collect();
    items.join(", ")
}
