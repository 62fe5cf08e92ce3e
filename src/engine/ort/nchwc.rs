//! Lowers 2-D convolutions to ONNX Runtime's blocked-layout (NCHWc) CPU kernels, for models whose convolution
//! weights are computed or fed at run time: training step models, and eval models whose parameters are inputs.
//!
//! ONNX Runtime rewrites a Conv into its NCHWc form (domain `com.microsoft.nchwc`) only when the weights are
//! constant, since it reorders them once while optimizing. A training step feeds new weights every step, so its
//! convolutions run as im2col + GEMM, about twice as slow on a resnet. Here each eligible Conv becomes
//! ReorderInput → NCHWc Conv → ReorderOutput, with the weights reordered inside the graph (a Reshape, Transpose,
//! Reshape of the small filter tensor, every run). The reorders of the activations cost a few percent of the
//! convolution they feed. The block size is the CPU's (16 with AVX-512, 8 with AVX2), asked of the loaded
//! library by [`block_size`].

use std::collections::HashMap;

use bytes::Bytes;
use rl_passes::analysis::shapes::{attr_int, attr_ints, attr_string, TensorType};
use rl_passes::autodiff::Attr;
use rl_passes::ir::Graph;
use rl_passes::onnx::{
    tensor_proto::DataType, AttributeProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
};
use rl_passes::pass::{Changed, Pass, PassError};

/// The contrib-op domain of ONNX Runtime's blocked-layout kernels.
pub const NCHWC_DOMAIN: &str = "com.microsoft.nchwc";

/// Rewrites each float 2-D Conv with group 1, no dilation and explicit padding whose input and output channel
/// counts are multiples of the block size. Others (a 3-channel stem, grouped or dilated convolutions) are kept.
pub struct NchwcConvs {
    block: usize,
    /// Types of the model's values (from `infer_shapes`).
    types: HashMap<String, TensorType>,
}

impl NchwcConvs {
    pub fn new(block: usize, types: HashMap<String, TensorType>) -> NchwcConvs {
        NchwcConvs { block, types }
    }
}

/// What an eligible Conv needs for its blocked form.
struct Plan {
    out_channels: usize,
    in_channels: usize,
    kernel: [usize; 2],
}

fn plan(node: &NodeProto, x: &[usize], w: &[usize], block: usize) -> Option<Plan> {
    let default_domain = node.domain().is_empty() || node.domain() == "ai.onnx";
    let dilated = attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1));
    let auto_pad = attr_string(node, "auto_pad").unwrap_or_default();
    let eligible = default_domain
        && node.op_type() == "Conv"
        && x.len() == 4
        && w.len() == 4
        && attr_int(node, "group").unwrap_or(1) == 1
        && !dilated
        && (auto_pad.is_empty() || auto_pad == "NOTSET")
        && w[0].is_multiple_of(block)
        && w[1].is_multiple_of(block)
        && x[1] == w[1];
    eligible.then_some(Plan {
        out_channels: w[0],
        in_channels: w[1],
        kernel: [w[2], w[3]],
    })
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    Attr::Ints(values.to_vec()).into_proto(name)
}

/// A one-output node of `domain` (empty: the default domain).
pub(super) fn node(
    op: &str,
    domain: &str,
    name: String,
    inputs: Vec<String>,
    output: String,
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: Some(op.to_owned()),
        domain: (!domain.is_empty()).then(|| domain.to_owned()),
        name: Some(name),
        input: inputs,
        output: vec![output],
        attribute,
        ..Default::default()
    }
}

fn shape_constant(name: &str, dims: &[usize]) -> TensorProto {
    TensorProto {
        name: Some(name.to_owned()),
        dims: vec![dims.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(Bytes::from(
            dims.iter()
                .flat_map(|&d| (d as i64).to_le_bytes())
                .collect::<Vec<u8>>(),
        )),
        ..Default::default()
    }
}

impl Pass for NchwcConvs {
    fn name(&self) -> &'static str {
        "nchwc-convs"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<Changed, PassError> {
        if self.block < 2 {
            return Ok(Changed::No);
        }
        let float = |v: &str| {
            self.types
                .get(v)
                .filter(|t| t.dtype == DataType::Float as i32)
        };
        let mut chosen = Vec::new();
        for index in graph.topological_order()? {
            let n = graph.node(index);
            if n.op_type() != "Conv" || n.input.len() < 2 || n.output.len() != 1 {
                continue;
            }
            if let (Some(x), Some(w)) = (float(&n.input[0]), float(&n.input[1])) {
                if let Some(p) = plan(n, &x.shape, &w.shape, self.block) {
                    chosen.push((index, p));
                }
            }
        }
        if chosen.is_empty() {
            return Ok(Changed::No);
        }
        let b = self.block;
        for (index, p) in chosen {
            let conv = graph.remove_node(index).expect("chosen from the graph");
            let base = if conv.name().is_empty() {
                conv.output[0].clone()
            } else {
                conv.name().to_owned()
            };
            let fresh =
                |graph: &Graph, suffix: &str| graph.fresh_name(&format!("{base}/nchwc_{suffix}"));
            let (k, c, [kh, kw]) = (p.out_channels, p.in_channels, p.kernel);
            // [K, C, kh, kw] → [K/b, C/b, kh, kw, b (input), b (output)]: the filter layout of the blocked kernel.
            let split = fresh(graph, "filter_split_shape");
            graph.add_initializer(shape_constant(&split, &[k / b, b, c / b, b, kh, kw]));
            let merged = fresh(graph, "filter_shape");
            graph.add_initializer(shape_constant(&merged, &[k, c, kh, kw]));
            let [w6, w6t, wb, xb, yb] = [
                "filter_split",
                "filter_blocked6",
                "filter",
                "input",
                "output",
            ]
            .map(|s| fresh(graph, s));
            let mut attributes: Vec<AttributeProto> = conv
                .attribute
                .iter()
                .filter(|a| matches!(a.name(), "pads" | "strides"))
                .cloned()
                .collect();
            attributes.push(ints("kernel_shape", &[kh as i64, kw as i64]));
            let mut conv_inputs = vec![xb.clone(), wb.clone()];
            conv_inputs.extend(conv.input.iter().skip(2).cloned());
            let nodes = vec![
                node(
                    "Reshape",
                    "",
                    w6.clone(),
                    vec![conv.input[1].clone(), split],
                    w6.clone(),
                    vec![],
                ),
                node(
                    "Transpose",
                    "",
                    w6t.clone(),
                    vec![w6],
                    w6t.clone(),
                    vec![ints("perm", &[0, 2, 4, 5, 3, 1])],
                ),
                node(
                    "Reshape",
                    "",
                    wb.clone(),
                    vec![w6t, merged],
                    wb.clone(),
                    vec![],
                ),
                node(
                    "ReorderInput",
                    NCHWC_DOMAIN,
                    xb.clone(),
                    vec![conv.input[0].clone()],
                    xb,
                    vec![],
                ),
                node(
                    "Conv",
                    NCHWC_DOMAIN,
                    base.clone(),
                    conv_inputs,
                    yb.clone(),
                    attributes,
                ),
                node(
                    "ReorderOutput",
                    NCHWC_DOMAIN,
                    format!("{base}/nchwc_reorder_output"),
                    vec![yb],
                    conv.output[0].clone(),
                    vec![Attr::Int(k as i64).into_proto("channels")],
                ),
            ];
            graph.add_nodes(nodes)?;
        }
        graph.import_domain(NCHWC_DOMAIN, 1);
        Ok(Changed::Yes)
    }
}

/// The channel block of ONNX Runtime's NCHWc kernels on this CPU, `None` when the loaded library has none (no
/// AVX2 on x86-64, or a build without them). Asked of the library itself, once per process: ReorderInput pads a
/// four-channel tensor (its smallest input) to one block.
pub fn block_size() -> Option<usize> {
    static BLOCK: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *BLOCK.get_or_init(|| probe_block_size().ok().flatten())
}

fn probe_block_size() -> Result<Option<usize>, String> {
    use rl_passes::onnx::GraphProto;
    use rl_passes::tensor::value_info;

    let float = DataType::Float as i32;
    // The output's shape is what is asked: declared without one.
    let mut output = value_info("y", float, &[]);
    if let Some(rl_passes::onnx::type_proto::Value::TensorType(t)) =
        output.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.shape = None;
    }
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![
            OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            },
            OperatorSetIdProto {
                domain: Some(NCHWC_DOMAIN.to_owned()),
                version: Some(1),
            },
        ],
        graph: Some(GraphProto {
            name: Some("nchwc_probe".to_owned()),
            node: vec![node(
                "ReorderInput",
                NCHWC_DOMAIN,
                "probe".to_owned(),
                vec!["x".to_owned()],
                "y".to_owned(),
                vec![],
            )],
            input: vec![value_info("x", float, &[1, 4, 1, 1])],
            output: vec![output],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut session = crate::engine::ort::OrtSessionBuilder::new(crate::engine::Device::Cpu)
        .build(&model)
        .map_err(|e| e.to_string())?
        .session;
    let x = ort::value::Tensor::from_array(([1usize, 4, 1, 1], vec![0f32; 4]))
        .map_err(|e| e.to_string())?;
    let outputs = session
        .run(ort::inputs!["x" => x])
        .map_err(|e| e.to_string())?;
    let (shape, _) = outputs["y"]
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    Ok(shape.get(1).map(|&c| c as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rl_passes::testing::{self, f32_tensor, ModelBuilder, NodeExt};

    fn zeros(name: &str, dims: &[i64]) -> TensorProto {
        f32_tensor(
            name,
            dims,
            &vec![0.0; dims.iter().product::<i64>() as usize],
        )
    }

    /// x [2, 16, 8, 8] → Conv 16→32 3×3 pad 1 → Conv 32→32 grouped (2) → y; s [2, 3, 8, 8] → Conv 3→16 → z.
    fn model() -> ModelProto {
        let conv = |name: &str, x: &str, w: &str, out: &str| {
            testing::node("Conv", &[x, w], &[out])
                .named(name)
                .ints("pads", &[1, 1, 1, 1])
        };
        ModelBuilder::new("convs")
            .node(conv("wide", "x", "w1", "h"))
            .node(conv("grouped", "h", "w2", "y").int("group", 2))
            .node(conv("stem", "s", "w3", "z"))
            .initializer(zeros("w1", &[32, 16, 3, 3]))
            .initializer(zeros("w2", &[32, 16, 3, 3]))
            .initializer(zeros("w3", &[16, 3, 3, 3]))
            .input("x", DataType::Float, [2, 16, 8, 8])
            .input("s", DataType::Float, [2, 3, 8, 8])
            .output("y", DataType::Float, [2, 32, 8, 8])
            .output("z", DataType::Float, [2, 16, 8, 8])
            .build()
    }

    fn lowered(block: usize) -> (Changed, ModelProto) {
        let m = model();
        let mut g = Graph::lift(m.clone()).unwrap();
        let types =
            rl_passes::analysis::shapes::infer_shapes(&g, &crate::inputs::input_shapes(&m, 1))
                .unwrap();
        let changed = NchwcConvs::new(block, types).run(&mut g).unwrap();
        (changed, g.lower().unwrap())
    }

    #[test]
    fn only_ungrouped_convolutions_with_whole_channel_blocks_are_lowered() {
        let (changed, m) = lowered(16);
        assert_eq!(changed, Changed::Yes);
        let g = m.graph.as_ref().unwrap();
        let ops: Vec<(&str, &str)> = g.node.iter().map(|n| (n.domain(), n.op_type())).collect();
        let blocked = |op: &str| {
            ops.iter()
                .filter(|&&(d, o)| d == NCHWC_DOMAIN && o == op)
                .count()
        };
        assert_eq!(
            (
                blocked("ReorderInput"),
                blocked("Conv"),
                blocked("ReorderOutput")
            ),
            (1, 1, 1)
        );
        let mut plain: Vec<&str> = g
            .node
            .iter()
            .filter(|n| n.op_type() == "Conv" && n.domain().is_empty())
            .map(|n| n.name())
            .collect();
        plain.sort();
        assert_eq!(plain, ["grouped", "stem"]);
        let conv = g
            .node
            .iter()
            .find(|n| n.domain() == NCHWC_DOMAIN && n.op_type() == "Conv")
            .unwrap();
        assert_eq!(conv.name(), "wide");
        let attr = |name: &str| {
            conv.attribute
                .iter()
                .find(|a| a.name() == name)
                .map(|a| a.ints.clone())
        };
        assert_eq!(attr("kernel_shape"), Some(vec![3, 3]));
        assert_eq!(attr("pads"), Some(vec![1, 1, 1, 1]));
        // The blocked output is turned back into "h" for the grouped convolution, with 32 channels.
        let back = g
            .node
            .iter()
            .find(|n| n.op_type() == "ReorderOutput")
            .unwrap();
        assert_eq!(back.output, ["h"]);
        assert_eq!(back.attribute[0].i, Some(32));
        // The filter goes through Reshape → Transpose [0, 2, 4, 5, 3, 1] → Reshape into the conv.
        let perm = g.node.iter().find(|n| n.op_type() == "Transpose").unwrap();
        assert_eq!(perm.attribute[0].ints, [0, 2, 4, 5, 3, 1]);
        assert!(m
            .opset_import
            .iter()
            .any(|o| o.domain() == NCHWC_DOMAIN && o.version() == 1));
    }

    #[test]
    fn no_block_or_no_eligible_convolution_leaves_the_model_alone() {
        assert_eq!(lowered(1).0, Changed::No);
        // 32-channel blocks: no convolution here has both channel counts divisible by 32.
        let (changed, m) = lowered(32);
        assert_eq!(changed, Changed::No);
        assert!(m.opset_import.iter().all(|o| o.domain() != NCHWC_DOMAIN));
        // 8-channel blocks take the same convolution as 16 (the grouped and 3-channel ones stay).
        let (changed, m) = lowered(8);
        assert_eq!(changed, Changed::Yes);
        let convs = m
            .graph
            .unwrap()
            .node
            .iter()
            .filter(|n| n.domain() == NCHWC_DOMAIN && n.op_type() == "Conv")
            .count();
        assert_eq!(convs, 1);
    }
}
