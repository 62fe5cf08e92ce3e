//! The matching: how the models' parts are paired (metadata, inputs, outputs and initializers by key,
//! nodes by unique name and then by position within their op type) and what is compared for each pair.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use prost::Message;

use super::describe::{
    op_label, quote, render_attr, render_type_opt, summarize_tensor, INLINE_VALUE_MAX,
};
use super::digest::{hash_messages, sha256_hex};
use super::model::{
    Changes, FieldChange, IoChange, IoDiff, IoEntry, MatchKind, MetaChange, MetaEntry,
    MetadataDiff, ModelDiff, NodeChange, NodeSummary, Opset, OpsetChange, OrderChange, OtherChange,
    Summary, TensorChange, TensorSummary, ValueSummary,
};
use crate::contract;
use crate::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, StringStringEntryProto, TensorProto,
    ValueInfoProto,
};

/// Compares `a` (before) with `b` (after).
pub fn diff_models(a: &ModelProto, b: &ModelProto) -> ModelDiff {
    let empty = GraphProto::default();
    let ga = a.graph.as_ref().unwrap_or(&empty);
    let gb = b.graph.as_ref().unwrap_or(&empty);

    let model = diff_header(a, b, ga, gb);
    let opsets = diff_opsets(a, b);
    let metadata = MetadataDiff {
        model: diff_metadata(&a.metadata_props, &b.metadata_props),
        graph: diff_metadata(&ga.metadata_props, &gb.metadata_props),
    };
    let inputs = diff_io(&ga.input, &gb.input);
    let outputs = diff_io(&ga.output, &gb.output);
    let initializers = diff_initializers(&ga.initializer, &gb.initializer);
    let nodes = diff_nodes(&ga.node, &gb.node);
    let histogram = histogram_delta(&ga.node, &gb.node);

    let mut other = Vec::new();
    other_change(
        &mut other,
        "graph.value_info",
        &ga.value_info,
        &gb.value_info,
    );
    other_change(
        &mut other,
        "graph.sparse_initializer",
        &ga.sparse_initializer,
        &gb.sparse_initializer,
    );
    other_change(
        &mut other,
        "graph.quantization_annotation",
        &ga.quantization_annotation,
        &gb.quantization_annotation,
    );
    other_change(&mut other, "functions", &a.functions, &b.functions);
    other_change(
        &mut other,
        "training_info",
        &a.training_info,
        &b.training_info,
    );
    other_change(
        &mut other,
        "configuration",
        &a.configuration,
        &b.configuration,
    );

    let summary = Summary {
        nodes: nodes.counts(),
        initializers: initializers.counts(),
        inputs: inputs.counts(),
        outputs: outputs.counts(),
        metadata: metadata.model.counts().plus(metadata.graph.counts()),
        opsets: opsets.counts(),
    };

    ModelDiff {
        model,
        opsets,
        metadata,
        inputs,
        outputs,
        initializers,
        nodes,
        histogram,
        other,
        summary,
    }
}

fn diff_header(
    a: &ModelProto,
    b: &ModelProto,
    ga: &GraphProto,
    gb: &GraphProto,
) -> Vec<FieldChange> {
    let pairs = [
        (
            "ir_version",
            a.ir_version().to_string(),
            b.ir_version().to_string(),
        ),
        (
            "producer_name",
            quote(a.producer_name()),
            quote(b.producer_name()),
        ),
        (
            "producer_version",
            quote(a.producer_version()),
            quote(b.producer_version()),
        ),
        ("domain", quote(a.domain()), quote(b.domain())),
        (
            "model_version",
            a.model_version().to_string(),
            b.model_version().to_string(),
        ),
        ("graph.name", quote(ga.name()), quote(gb.name())),
    ];
    pairs
        .into_iter()
        .filter(|(_, x, y)| x != y)
        .map(|(field, x, y)| FieldChange::new(field, Some(x), Some(y)))
        .collect()
}

fn diff_opsets(a: &ModelProto, b: &ModelProto) -> Changes<Opset, OpsetChange> {
    let map = |m: &ModelProto| -> BTreeMap<String, i64> {
        m.opset_import
            .iter()
            .map(|o| (o.domain().to_owned(), o.version()))
            .collect()
    };
    let (ma, mb) = (map(a), map(b));
    let mut out = Changes::default();
    for (domain, &va) in &ma {
        match mb.get(domain) {
            None => out.removed.push(Opset {
                domain: domain.clone(),
                version: va,
            }),
            Some(&vb) if vb != va => out.changed.push(OpsetChange {
                domain: domain.clone(),
                from: va,
                to: vb,
            }),
            Some(_) => {}
        }
    }
    for (domain, &vb) in &mb {
        if !ma.contains_key(domain) {
            out.added.push(Opset {
                domain: domain.clone(),
                version: vb,
            });
        }
    }
    out
}

/// Values of the Replacement Learning contract (plan, manifest) are machine-written JSON: never shown inline.
fn summarize_value(key: &str, value: &str) -> ValueSummary {
    let shown = !contract::is_contract_key(key)
        && value.len() <= INLINE_VALUE_MAX
        && !value.chars().any(char::is_control);
    ValueSummary {
        len: value.len(),
        sha256: sha256_hex(value.as_bytes()),
        value: shown.then(|| value.to_owned()),
    }
}

fn diff_metadata(
    a: &[StringStringEntryProto],
    b: &[StringStringEntryProto],
) -> Changes<MetaEntry, MetaChange> {
    let map = |props: &[StringStringEntryProto]| -> BTreeMap<String, String> {
        props
            .iter()
            .map(|p| (p.key().to_owned(), p.value().to_owned()))
            .collect()
    };
    let (ma, mb) = (map(a), map(b));
    let mut out = Changes::default();
    for (key, va) in &ma {
        match mb.get(key) {
            None => out.removed.push(MetaEntry {
                key: key.clone(),
                value: summarize_value(key, va),
            }),
            Some(vb) if vb != va => out.changed.push(MetaChange {
                key: key.clone(),
                from: summarize_value(key, va),
                to: summarize_value(key, vb),
            }),
            Some(_) => {}
        }
    }
    for (key, vb) in &mb {
        if !ma.contains_key(key) {
            out.added.push(MetaEntry {
                key: key.clone(),
                value: summarize_value(key, vb),
            });
        }
    }
    out
}

fn diff_io(a: &[ValueInfoProto], b: &[ValueInfoProto]) -> IoDiff {
    let map = |vis: &[ValueInfoProto]| -> BTreeMap<String, String> {
        vis.iter()
            .map(|v| (v.name().to_owned(), render_type_opt(v.r#type.as_ref())))
            .collect()
    };
    let (ma, mb) = (map(a), map(b));
    let mut out = IoDiff::default();
    for (name, ta) in &ma {
        match mb.get(name) {
            None => out.removed.push(IoEntry {
                name: name.clone(),
                ty: ta.clone(),
            }),
            Some(tb) if tb != ta => out.changed.push(IoChange {
                name: name.clone(),
                from: ta.clone(),
                to: tb.clone(),
            }),
            Some(_) => {}
        }
    }
    for (name, tb) in &mb {
        if !ma.contains_key(name) {
            out.added.push(IoEntry {
                name: name.clone(),
                ty: tb.clone(),
            });
        }
    }
    // Order: compare the relative order of the names present on both sides.
    let common_a: Vec<&str> = a
        .iter()
        .map(|v| v.name())
        .filter(|n| mb.contains_key(*n))
        .collect();
    let common_b: Vec<&str> = b
        .iter()
        .map(|v| v.name())
        .filter(|n| ma.contains_key(*n))
        .collect();
    if common_a != common_b {
        out.order = Some(OrderChange {
            from: a.iter().map(|v| v.name().to_owned()).collect(),
            to: b.iter().map(|v| v.name().to_owned()).collect(),
        });
    }
    out
}

fn diff_initializers(a: &[TensorProto], b: &[TensorProto]) -> Changes<TensorSummary, TensorChange> {
    let map = |ts: &[TensorProto]| -> BTreeMap<String, TensorSummary> {
        ts.iter()
            .map(|t| (t.name().to_owned(), summarize_tensor(t)))
            .collect()
    };
    let (ma, mb) = (map(a), map(b));
    let mut out = Changes::default();
    for (name, sa) in &ma {
        match mb.get(name) {
            None => out.removed.push(sa.clone()),
            Some(sb) => {
                let mut what = Vec::new();
                if sa.dtype != sb.dtype {
                    what.push("dtype".to_owned());
                }
                if sa.dims != sb.dims {
                    what.push("shape".to_owned());
                }
                if sa.external != sb.external {
                    what.push("location".to_owned());
                }
                if sa.sha256 != sb.sha256 {
                    what.push("content".to_owned());
                }
                if !what.is_empty() {
                    out.changed.push(TensorChange {
                        name: name.clone(),
                        from: sa.clone(),
                        to: sb.clone(),
                        what,
                    });
                }
            }
        }
    }
    for (name, sb) in &mb {
        if !ma.contains_key(name) {
            out.added.push(sb.clone());
        }
    }
    out
}

/// Matches nodes of `a` to nodes of `b`: by unique non-empty name first, then by position among the
/// unmatched nodes of the same op_type. Returns `(a_index, b_index, kind)` pairs.
fn match_nodes(a: &[NodeProto], b: &[NodeProto]) -> Vec<(usize, usize, MatchKind)> {
    fn unique_names(nodes: &[NodeProto]) -> HashMap<&str, usize> {
        let mut count: HashMap<&str, (usize, usize)> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if !n.name().is_empty() {
                count.entry(n.name()).or_insert((0, i)).0 += 1;
            }
        }
        count
            .into_iter()
            .filter(|(_, (c, _))| *c == 1)
            .map(|(name, (_, i))| (name, i))
            .collect()
    }
    let (ua, ub) = (unique_names(a), unique_names(b));
    let mut pairs = Vec::new();
    let mut matched_a = vec![false; a.len()];
    let mut matched_b = vec![false; b.len()];
    for (i, n) in a.iter().enumerate() {
        if ua.get(n.name()) != Some(&i) {
            continue;
        }
        if let Some(&j) = ub.get(n.name()) {
            pairs.push((i, j, MatchKind::Name));
            matched_a[i] = true;
            matched_b[j] = true;
        }
    }
    let mut queue_b: HashMap<&str, VecDeque<usize>> = HashMap::new();
    for (j, n) in b.iter().enumerate() {
        if !matched_b[j] {
            queue_b.entry(n.op_type()).or_default().push_back(j);
        }
    }
    for (i, n) in a.iter().enumerate() {
        if matched_a[i] {
            continue;
        }
        if let Some(j) = queue_b.get_mut(n.op_type()).and_then(|q| q.pop_front()) {
            pairs.push((i, j, MatchKind::Position));
        }
    }
    pairs
}

fn diff_nodes(a: &[NodeProto], b: &[NodeProto]) -> Changes<NodeSummary, NodeChange> {
    let pairs = match_nodes(a, b);
    let mut matched_a = vec![false; a.len()];
    let mut matched_b = vec![false; b.len()];
    let mut out = Changes::default();
    for &(i, j, kind) in &pairs {
        matched_a[i] = true;
        matched_b[j] = true;
        let details = node_details(&a[i], &b[j]);
        if !details.is_empty() {
            let name = if b[j].name().is_empty() {
                a[i].name()
            } else {
                b[j].name()
            };
            out.changed.push(NodeChange {
                a_index: i,
                b_index: j,
                name: name.to_owned(),
                domain: b[j].domain().to_owned(),
                op_type: b[j].op_type().to_owned(),
                matched_by: kind,
                details,
            });
        }
    }
    out.changed.sort_by_key(|c| (c.b_index, c.a_index));
    out.removed = (0..a.len())
        .filter(|&i| !matched_a[i])
        .map(|i| summarize_node(i, &a[i]))
        .collect();
    out.added = (0..b.len())
        .filter(|&j| !matched_b[j])
        .map(|j| summarize_node(j, &b[j]))
        .collect();
    out
}

fn summarize_node(index: usize, n: &NodeProto) -> NodeSummary {
    NodeSummary {
        index,
        name: n.name().to_owned(),
        domain: n.domain().to_owned(),
        op_type: n.op_type().to_owned(),
        inputs: n.input.clone(),
        outputs: n.output.clone(),
        attributes: n
            .attribute
            .iter()
            .map(|at| (at.name().to_owned(), render_attr(at)))
            .collect(),
    }
}

fn node_details(a: &NodeProto, b: &NodeProto) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let scalar = |out: &mut Vec<FieldChange>, field: &str, x: &str, y: &str| {
        if x != y {
            out.push(FieldChange::new(field, Some(quote(x)), Some(quote(y))));
        }
    };
    scalar(&mut out, "name", a.name(), b.name());
    scalar(&mut out, "domain", a.domain(), b.domain());
    scalar(&mut out, "op_type", a.op_type(), b.op_type());
    scalar(&mut out, "overload", a.overload(), b.overload());
    positional(&mut out, "input", &a.input, &b.input);
    positional(&mut out, "output", &a.output, &b.output);

    let attrs = |n: &NodeProto| -> BTreeMap<String, AttributeProto> {
        n.attribute
            .iter()
            .map(|at| {
                let mut at = at.clone();
                at.doc_string = None;
                (at.name().to_owned(), at)
            })
            .collect()
    };
    let (ma, mb) = (attrs(a), attrs(b));
    let names: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    for name in names {
        let field = format!("attr {name}");
        match (ma.get(name), mb.get(name)) {
            (Some(x), None) => out.push(FieldChange::new(field, Some(render_attr(x)), None)),
            (None, Some(y)) => out.push(FieldChange::new(field, None, Some(render_attr(y)))),
            (Some(x), Some(y)) => {
                if x.encode_to_vec() != y.encode_to_vec() {
                    out.push(FieldChange::new(
                        field,
                        Some(render_attr(x)),
                        Some(render_attr(y)),
                    ));
                }
            }
            (None, None) => {}
        }
    }
    out
}

fn positional(out: &mut Vec<FieldChange>, what: &str, a: &[String], b: &[String]) {
    for k in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(k), b.get(k));
        if x != y {
            out.push(FieldChange::new(
                format!("{what}[{k}]"),
                x.map(|s| quote(s)),
                y.map(|s| quote(s)),
            ));
        }
    }
}

fn histogram_delta(a: &[NodeProto], b: &[NodeProto]) -> BTreeMap<String, i64> {
    let mut delta: BTreeMap<String, i64> = BTreeMap::new();
    for n in a {
        *delta.entry(op_label(n.domain(), n.op_type())).or_default() -= 1;
    }
    for n in b {
        *delta.entry(op_label(n.domain(), n.op_type())).or_default() += 1;
    }
    delta.retain(|_, d| *d != 0);
    delta
}

fn other_change<M: Message>(out: &mut Vec<OtherChange>, field: &str, a: &[M], b: &[M]) {
    if a.is_empty() && b.is_empty() {
        return;
    }
    let (ha, hb) = (hash_messages(a), hash_messages(b));
    if ha != hb {
        out.push(OtherChange {
            field: field.to_owned(),
            from_count: a.len(),
            to_count: b.len(),
            from_sha256: ha,
            to_sha256: hb,
        });
    }
}
