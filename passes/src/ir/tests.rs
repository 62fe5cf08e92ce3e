//! Tests of the IR: lifting and lowering, validation, and that every edit keeps the derived state a fresh lift
//! would build.

use super::*;
use crate::onnx::GraphProto;
use petgraph::visit::IntoEdgeReferences;

pub(crate) fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn vi(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn model(nodes: Vec<NodeProto>) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        graph: Some(GraphProto {
            node: nodes,
            input: vec![vi("x")],
            output: vec![vi("y")],
            initializer: vec![crate::tensor::f32_tensor("w", &[1], &[2.0])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn lift_lower_keeps_order_and_parallel_edges() {
    let m = model(vec![
        node("Mul", "sq", &["x", "x"], &["t"]),
        node("Mul", "scale", &["t", "w"], &["y"]),
    ]);
    let g = Graph::lift(m.clone()).unwrap();
    assert_eq!(g.dag().edge_count(), 1);
    let sq = g.producer_node("t").unwrap();
    assert_eq!(g.dag.edges_directed(sq, Direction::Outgoing).count(), 1);
    assert_eq!(g.lower().unwrap(), m);
}

#[test]
fn unsorted_input_is_sorted_on_lowering() {
    let m = model(vec![
        node("Relu", "b", &["t"], &["y"]),
        node("Relu", "a", &["x"], &["t"]),
    ]);
    let lowered = Graph::lift(m).unwrap().lower().unwrap();
    let names: Vec<_> = lowered
        .graph
        .unwrap()
        .node
        .iter()
        .map(|n| n.name().to_owned())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn cycles_are_reported_with_a_node() {
    let m = model(vec![
        node("Add", "a", &["x", "u"], &["t"]),
        node("Relu", "b", &["t"], &["u"]),
        node("Relu", "c", &["t"], &["y"]),
    ]);
    assert!(matches!(Graph::lift(m), Err(GraphError::Cycle { .. })));
}

#[test]
fn dangling_and_duplicate_names_are_reported() {
    let m = model(vec![node("Relu", "a", &["nothing"], &["y"])]);
    assert_eq!(
        Graph::lift(m).unwrap_err(),
        GraphError::Dangling {
            node: "'a' (Relu)".into(),
            value: "nothing".into()
        }
    );
    let m = model(vec![
        node("Relu", "a", &["x"], &["y"]),
        node("Relu", "b", &["x"], &["y"]),
    ]);
    assert!(matches!(Graph::lift(m), Err(GraphError::DuplicateName { value, .. }) if value == "y"));
    let m = model(vec![
        node("Relu", "a", &["x"], &["w"]),
        node("Relu", "b", &["w"], &["y"]),
    ]);
    assert!(matches!(Graph::lift(m), Err(GraphError::DuplicateName { value, .. }) if value == "w"));
}

#[test]
fn new_nodes_are_placed_before_their_first_consumer() {
    let m = model(vec![
        node("Relu", "a", &["x"], &["t"]),
        node("Mul", "b", &["t", "w2"], &["y"]),
    ]);
    let mut gp = m.clone();
    gp.graph
        .as_mut()
        .unwrap()
        .initializer
        .push(crate::tensor::f32_tensor("w2", &[1], &[1.0]));
    let mut g = Graph::lift(gp).unwrap();
    g.remove_initializer("w2");
    g.add_node(node("Identity", "make_w2", &["w"], &["w2"]))
        .unwrap();
    let lowered = g.lower().unwrap();
    let names: Vec<_> = lowered
        .graph
        .unwrap()
        .node
        .iter()
        .map(|n| n.name().to_owned())
        .collect();
    assert_eq!(names, ["a", "make_w2", "b"]);
}

/// An If node whose branches read `captured` from the enclosing graph and write `out`.
fn if_reading(name: &str, cond: &str, captured: &str, out: &str) -> NodeProto {
    let branch = |b: &str| GraphProto {
        name: Some(b.into()),
        node: vec![node("Identity", &format!("{name}/{b}"), &[captured], &[b])],
        output: vec![vi(b)],
        ..Default::default()
    };
    let attr = |a: &str| crate::onnx::AttributeProto {
        name: Some(a.into()),
        g: Some(Box::new(branch(a))),
        ..Default::default()
    };
    let mut n = node("If", name, &[cond], &[out]);
    n.attribute = vec![attr("then_branch"), attr("else_branch")];
    n
}

/// Edges as (producer, output slot, consumer, input slot), by node name.
fn edge_set(g: &Graph) -> Vec<(String, usize, String, usize)> {
    let mut edges: Vec<_> = g
        .dag()
        .edge_references()
        .map(|e| {
            let w = e.weight();
            let (from, to) = (g.node(e.source()).name(), g.node(e.target()).name());
            (from.to_owned(), w.from_slot, to.to_owned(), w.to_slot)
        })
        .collect();
    edges.sort();
    edges
}

/// Readers by value, by node name.
fn reader_set(g: &Graph) -> Vec<(String, String, usize)> {
    let mut r: Vec<_> = g
        .readers
        .iter()
        .flat_map(|(v, rs)| rs.iter().map(move |&(i, s)| (v.clone(), i, s)))
        .map(|(v, i, s)| (v, g.node(i).name().to_owned(), s))
        .collect();
    r.sort();
    r
}

#[test]
fn incremental_edits_keep_the_edges_a_fresh_lift_derives() {
    let mut m = model(vec![
        node("Relu", "a", &["x"], &["t"]),
        node("Mul", "b", &["t", "t"], &["u"]),
        node("Add", "c", &["u", "w"], &["v"]),
        node("Greater", "cmp", &["x", "w"], &["flag"]),
        node("Add", "d", &["v", "t"], &["y"]),
    ]);
    m.graph
        .as_mut()
        .unwrap()
        .initializer
        .push(crate::tensor::f32_tensor("k", &[1], &[3.0]));
    let mut g = Graph::lift(m).unwrap();
    let check = |g: &Graph| {
        let fresh = Graph::lift(g.lower().unwrap()).unwrap();
        assert_eq!(edge_set(g), edge_set(&fresh));
        assert_eq!(reader_set(g), reader_set(&fresh));
    };
    check(&g);

    // Replace a node by another writing the same value: its readers wait, then are wired to the new one.
    let a = g.producer_node("t").unwrap();
    g.remove_node(a);
    assert_eq!(g.dag().edge_count(), 2);
    g.add_node(node("Sigmoid", "a2", &["x"], &["t"])).unwrap();
    check(&g);

    // Rewire one input, then all uses of a value.
    let b = g.producer_node("u").unwrap();
    g.set_input(b, 1, "k").unwrap();
    check(&g);
    g.add_nodes([
        node("Neg", "n1", &["x"], &["t_neg"]),
        node("Abs", "n2", &["t_neg"], &["t_abs"]),
    ])
    .unwrap();
    assert_eq!(g.replace_all_uses("t", "t_abs").unwrap(), 2);
    check(&g);

    // A node with a subgraph reads through an implicit edge.
    g.add_node(if_reading("branch", "flag", "v", "picked"))
        .unwrap();
    let d = g.producer_node("y").unwrap();
    g.update_node(d, |n| n.input[1] = "picked".into()).unwrap();
    check(&g);
    assert!(matches!(
        g.replace_all_uses("v", "u"),
        Err(GraphError::ReadBySubgraph { value, .. }) if value == "v"
    ));

    // Change a node's outputs and attributes; swap an initializer for a node.
    let c = g.producer_node("v").unwrap();
    g.update_node(c, |n| n.input.push("k".into())).unwrap();
    g.set_attribute(
        c,
        crate::onnx::AttributeProto {
            name: Some("note".into()),
            i: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    g.remove_initializer("k");
    g.add_node(node("Identity", "make_k", &["w"], &["k"]))
        .unwrap();
    check(&g);
    let cmp = g.producer_node("flag").unwrap();
    g.update_node(cmp, |n| n.output[0] = "flag2".into())
        .unwrap();
    assert!(matches!(g.validate(), Err(GraphError::Dangling { value, .. }) if value == "flag"));
    let branch = g.producer_node("picked").unwrap();
    g.set_input(branch, 0, "flag2").unwrap();
    check(&g);
}

#[test]
fn failed_edits_leave_the_graph_as_it_was() {
    let m = model(vec![
        node("Relu", "a", &["x"], &["t"]),
        node("Mul", "b", &["t", "w"], &["y"]),
    ]);
    let mut g = Graph::lift(m.clone()).unwrap();
    assert!(matches!(
        g.add_nodes([
            node("Relu", "c", &["t"], &["fresh"]),
            node("Relu", "d", &["missing"], &["z"]),
        ]),
        Err(GraphError::Dangling { value, .. }) if value == "missing"
    ));
    assert!(matches!(
        g.add_node(node("Relu", "e", &["x"], &["t"])),
        Err(GraphError::DuplicateName { value, .. }) if value == "t"
    ));
    let b = g.producer_node("y").unwrap();
    assert!(g.set_input(b, 0, "missing").is_err());
    assert!(g.update_node(b, |n| n.output[0] = "t".into()).is_err());
    assert_eq!(g.lower().unwrap(), m);
    assert_eq!(g.dag().edge_count(), 1);
    assert_eq!(g.producer("fresh"), None);
}
