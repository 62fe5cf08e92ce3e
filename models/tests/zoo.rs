//! Model-zoo tests: structure, naming, parameter counts, determinism, errors, and execution in tract.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use prost::Message;
use rl_models::{
    build, build_custom_resnet_cifar, build_custom_vit, build_without_weights, default_vit_patch,
    parameter_count, ZooError, ZooOptions, MODEL_NAMES,
};
use rl_passes::onnx::{tensor_shape_proto::dimension::Value, type_proto, GraphProto, ModelProto};
use tract_onnx::prelude::*;

fn graph(m: &ModelProto) -> &GraphProto {
    m.graph.as_ref().expect("graph")
}

fn opts(classes: usize, image_size: usize, seed: u64) -> ZooOptions {
    ZooOptions {
        classes,
        image_size,
        channels: 3,
        seed,
    }
}

/// Shape of a graph input/output: `Err(param)` for a symbolic dim.
fn io_shape(m: &ModelProto, input: bool) -> (String, Vec<Result<i64, String>>) {
    let g = graph(m);
    let vi = if input { &g.input } else { &g.output };
    assert_eq!(vi.len(), 1);
    let Some(type_proto::Value::TensorType(t)) = &vi[0].r#type.as_ref().unwrap().value else {
        panic!("not a tensor type")
    };
    assert_eq!(t.elem_type, Some(1), "float32");
    let dims = t
        .shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value.as_ref().unwrap() {
            Value::DimValue(v) => Ok(*v),
            Value::DimParam(p) => Err(p.clone()),
        })
        .collect();
    (vi[0].name.clone().unwrap(), dims)
}

/// Header, I/O, naming uniqueness, topological order and initializer encoding.
fn check_well_formed(m: &ModelProto, o: &ZooOptions) {
    assert_eq!(m.ir_version, Some(8));
    assert_eq!(m.producer_name.as_deref(), Some("rl-rewrite-zoo"));
    assert_eq!(m.opset_import.len(), 1);
    assert_eq!(m.opset_import[0].domain.as_deref(), Some(""));
    assert_eq!(m.opset_import[0].version, Some(17));
    let n = o.image_size as i64;
    assert_eq!(
        io_shape(m, true),
        (
            "input".to_owned(),
            vec![Err("N".to_owned()), Ok(o.channels as i64), Ok(n), Ok(n)]
        )
    );
    assert_eq!(
        io_shape(m, false),
        (
            "logits".to_owned(),
            vec![Err("N".to_owned()), Ok(o.classes as i64)]
        )
    );
    let g = graph(m);
    let mut defined: HashSet<&str> = HashSet::new();
    defined.insert("input");
    for t in &g.initializer {
        let name = t.name.as_deref().unwrap();
        assert!(defined.insert(name), "duplicate value {name}");
        assert_eq!(t.data_type, Some(1), "{name} is float32");
        let numel: i64 = t.dims.iter().product();
        assert!(t.float_data.is_empty());
        let Some(raw) = t.raw_data.as_ref() else {
            assert_eq!(m.graph.as_ref().unwrap().initializer[0].raw_data, None);
            continue;
        };
        assert_eq!(raw.len() as i64, 4 * numel, "{name} raw_data length");
        assert!(raw
            .chunks_exact(4)
            .all(|c| f32::from_le_bytes(c.try_into().unwrap()).is_finite()));
    }
    let mut node_names = HashSet::new();
    for node in &g.node {
        let name = node.name.as_deref().unwrap();
        assert!(node_names.insert(name), "duplicate node {name}");
        assert!(node.domain.is_none());
        for i in &node.input {
            assert!(
                defined.contains(i.as_str()),
                "{name}: input {i} not yet defined"
            );
        }
        for out in &node.output {
            assert!(defined.insert(out), "duplicate value {out}");
        }
    }
    assert!(defined.contains("logits"));
}

fn encode(m: &ModelProto) -> Vec<u8> {
    m.encode_to_vec()
}

/// Deterministic pseudo-random input in [-1, 1).
fn input_data(len: usize, salt: u64) -> Vec<f32> {
    let mut s = 0x2545_F491_4F6C_DD1D_u64 ^ salt;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Runs a model in tract on two different batches of 2; checks shape, finiteness and that outputs differ.
fn run_in_tract(m: &ModelProto, o: &ZooOptions) -> TractResult<()> {
    let bytes = encode(m);
    let s = o.image_size;
    let shape = [2, o.channels, s, s];
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])?
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let numel = shape.iter().product();
    let mut outs = vec![];
    for salt in [1u64, 2] {
        let x = Tensor::from_shape(&shape, &input_data(numel, salt))?;
        let y = plan.run(tvec!(x.into_tvalue()))?;
        let y = y[0].to_plain_array_view::<f32>()?;
        assert_eq!(y.shape(), &[2, o.classes]);
        let y: Vec<f32> = y.iter().copied().collect();
        assert!(y.iter().all(|v| v.is_finite()), "non-finite logits {y:?}");
        // The two samples of the batch differ too.
        let (a, b) = y.split_at(o.classes);
        assert!(
            a.iter().zip(b).any(|(p, q)| (p - q).abs() > 1e-4),
            "{a:?} vs {b:?}"
        );
        outs.push(y);
    }
    let max_diff = outs[0]
        .iter()
        .zip(&outs[1])
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max);
    assert!(max_diff > 1e-4, "outputs do not depend on the input");
    Ok(())
}

/// Every name at its default options, as a skeleton (no weight data: fast in debug builds).
#[test]
fn every_name_builds_with_defaults() {
    for &name in MODEL_NAMES {
        let o = ZooOptions::for_model(name).unwrap();
        let m = build_without_weights(name, &o).unwrap();
        check_well_formed(&m, &o);
        assert_eq!(graph(&m).name.as_deref(), Some(name));
        assert!(graph(&m).initializer.iter().all(|t| t.raw_data.is_none()));
    }
}

fn full_default_build(name: &str) {
    let t = Instant::now();
    let o = ZooOptions::for_model(name).unwrap();
    let m = build(name, &o).unwrap();
    check_well_formed(&m, &o);
    // Same graph as the skeleton, plus the data.
    let mut stripped = m.clone();
    for t in &mut stripped.graph.as_mut().unwrap().initializer {
        t.raw_data = None;
    }
    assert_eq!(stripped, build_without_weights(name, &o).unwrap());
    eprintln!("{name}: {:?} in {:?}", parameter_count(&m), t.elapsed());
}

/// Full builds (weights drawn) at default options of the models that are quick to initialise.
#[test]
fn full_default_builds_small() {
    for name in [
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "vit-ti",
    ] {
        full_default_build(name);
    }
}

#[test]
fn full_default_build_resnet18() {
    full_default_build("resnet18");
}

/// Full builds at default options of the large models (21M–304M parameters): tens of seconds in a debug
/// build, run with `cargo test -p rl-models --release -- --ignored`.
#[test]
#[ignore = "slow in debug builds (draws ~540M weights); run with --release -- --ignored"]
fn full_default_builds_large() {
    for name in [
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "vit-s",
        "vit-b",
        "vit-l",
    ] {
        full_default_build(name);
    }
}

#[test]
fn default_options() {
    for name in ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"] {
        assert_eq!(ZooOptions::for_model(name).unwrap(), opts(10, 32, 0));
    }
    for name in ["resnet18", "resnet152", "vit-ti", "vit-l"] {
        assert_eq!(ZooOptions::for_model(name).unwrap(), opts(1000, 224, 0));
    }
    assert_eq!(default_vit_patch(32), 4);
    assert_eq!(default_vit_patch(63), 4);
    assert_eq!(default_vit_patch(64), 16);
    assert_eq!(default_vit_patch(224), 16);
}

/// Learnable parameters (BN running statistics excluded) against the published counts. CIFAR: He et al.'s
/// option-A counts + 2,752 for the two option-B projection shortcuts (1x1 conv + BN, 16→32 and 32→64).
/// ImageNet ResNets and ViTs: torchvision's counts.
#[test]
fn parameter_counts() {
    let cifar = [
        ("resnet20", 269_722),
        ("resnet32", 464_154),
        ("resnet44", 658_586),
        ("resnet56", 853_018),
        ("resnet110", 1_727_962),
    ];
    for (name, paper) in cifar {
        let m = build_without_weights(name, &ZooOptions::for_model(name).unwrap()).unwrap();
        assert_eq!(parameter_count(&m).learnable, paper + 2_752, "{name}");
    }
    let imagenet = [
        ("resnet18", 11_689_512u64, 9_600u64),
        ("resnet34", 21_797_672, 17_024),
        ("resnet50", 25_557_032, 53_120),
        ("resnet101", 44_549_160, 105_344),
        ("resnet152", 60_192_808, 151_424),
        ("vit-ti", 5_717_416, 0),
        ("vit-s", 22_050_664, 0),
        ("vit-b", 86_567_656, 0),
        ("vit-l", 304_326_632, 0),
    ];
    for (name, learnable, buffers) in imagenet {
        let m = build_without_weights(name, &ZooOptions::for_model(name).unwrap()).unwrap();
        let c = parameter_count(&m);
        assert_eq!(c.learnable, learnable, "{name}");
        assert_eq!(c.buffers, buffers, "{name}");
    }
}

#[test]
fn tract_runs_resnet20() -> TractResult<()> {
    let o = ZooOptions::for_model("resnet20").unwrap();
    run_in_tract(&build("resnet20", &o).unwrap(), &o)
}

#[test]
fn tract_runs_resnet18_at_64() -> TractResult<()> {
    let o = opts(1000, 64, 0);
    run_in_tract(&build("resnet18", &o).unwrap(), &o)
}

#[test]
fn tract_runs_resnet50_at_32() -> TractResult<()> {
    let o = opts(100, 32, 3);
    run_in_tract(&build("resnet50", &o).unwrap(), &o)
}

#[test]
fn tract_runs_vit_ti_at_32() -> TractResult<()> {
    let o = opts(10, 32, 0);
    let m = build("vit-ti", &o).unwrap();
    assert_eq!(parameter_count(&m).learnable, 5_362_762);
    run_in_tract(&m, &o)
}

#[test]
fn tract_runs_tiny_custom_models() -> TractResult<()> {
    let o = opts(7, 16, 5);
    let m = build_custom_resnet_cifar(1, 4, &o).unwrap();
    check_well_formed(&m, &o);
    run_in_tract(&m, &o)?;
    let m = build_custom_vit(2, 16, 2, 32, 4, &o).unwrap();
    check_well_formed(&m, &o);
    run_in_tract(&m, &o)
}

#[test]
fn deterministic_and_seeded() {
    let o = ZooOptions::for_model("resnet20").unwrap();
    let a = encode(&build("resnet20", &o).unwrap());
    let b = encode(&build("resnet20", &o).unwrap());
    assert_eq!(a, b);
    let vo = opts(10, 32, 9);
    let va = encode(&build_custom_vit(2, 32, 4, 64, 8, &vo).unwrap());
    let vb = encode(&build_custom_vit(2, 32, 4, 64, 8, &vo).unwrap());
    assert_eq!(va, vb);

    let m1 = build("resnet20", &o).unwrap();
    let m2 = build(
        "resnet20",
        &ZooOptions {
            seed: 1,
            ..o.clone()
        },
    )
    .unwrap();
    let g1 = graph(&m1);
    let g2 = graph(&m2);
    assert_eq!(
        g1.node, g2.node,
        "graph structure does not depend on the seed"
    );
    assert_eq!(g1.initializer.len(), g2.initializer.len());
    for (t1, t2) in g1.initializer.iter().zip(&g2.initializer) {
        assert_eq!(t1.name, t2.name);
        assert_eq!(t1.dims, t2.dims);
        assert_ne!(t1.raw_data, t2.raw_data, "{:?}", t1.name);
    }
}

#[test]
fn resnet_tensor_and_node_names() {
    let m = build("resnet20", &ZooOptions::for_model("resnet20").unwrap()).unwrap();
    let g = graph(&m);
    let inits: HashMap<&str, &Vec<i64>> = g
        .initializer
        .iter()
        .map(|t| (t.name.as_deref().unwrap(), &t.dims))
        .collect();
    let expect = [
        ("conv1.weight", vec![16, 3, 3, 3]),
        ("bn1.weight", vec![16]),
        ("bn1.bias", vec![16]),
        ("bn1.running_mean", vec![16]),
        ("bn1.running_var", vec![16]),
        ("layer1.2.conv2.weight", vec![16, 16, 3, 3]),
        ("layer2.0.conv1.weight", vec![32, 16, 3, 3]),
        ("layer2.0.downsample.0.weight", vec![32, 16, 1, 1]),
        ("layer2.0.downsample.1.weight", vec![32]),
        ("layer3.0.downsample.1.running_var", vec![64]),
        ("layer3.2.bn2.bias", vec![64]),
        ("fc.weight", vec![10, 64]),
        ("fc.bias", vec![10]),
    ];
    for (name, dims) in expect {
        assert_eq!(inits.get(name), Some(&&dims), "{name}");
    }
    assert!(!inits.contains_key("layer1.0.downsample.0.weight"));
    assert!(!inits.contains_key("layer2.1.downsample.0.weight"));
    let nodes: HashMap<&str, &str> = g
        .node
        .iter()
        .map(|n| (n.name.as_deref().unwrap(), n.op_type.as_deref().unwrap()))
        .collect();
    for (name, op) in [
        ("conv1", "Conv"),
        ("bn1", "BatchNormalization"),
        ("relu", "Relu"),
        ("layer2.1.conv1", "Conv"),
        ("layer2.1.relu1", "Relu"),
        ("layer2.1.add", "Add"),
        ("layer2.1.relu", "Relu"),
        ("layer2.0.downsample.0", "Conv"),
        ("avgpool", "GlobalAveragePool"),
        ("flatten", "Flatten"),
        ("fc", "Gemm"),
    ] {
        assert_eq!(nodes.get(name), Some(&op), "{name}");
    }
    // BN is perturbed away from the identity, and parameters are not all equal.
    let floats = |name: &str| -> Vec<f32> {
        let t = g
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
            .unwrap();
        t.raw_data
            .as_ref()
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let w = floats("bn1.weight");
    assert!(w.iter().all(|v| (0.9..=1.1).contains(v)) && w.iter().any(|v| *v != 1.0));
    let var = floats("layer1.0.bn2.running_var");
    assert!(var.iter().all(|v| *v >= 0.9));

    let m = build_without_weights("resnet50", &opts(1000, 32, 0)).unwrap();
    let g = graph(&m);
    let dims = |name: &str| {
        g.initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
            .map(|t| t.dims.clone())
    };
    assert_eq!(dims("conv1.weight"), Some(vec![64, 3, 7, 7]));
    assert_eq!(
        dims("layer1.0.downsample.0.weight"),
        Some(vec![256, 64, 1, 1])
    );
    assert_eq!(dims("layer3.5.conv3.weight"), Some(vec![1024, 256, 1, 1]));
    assert_eq!(dims("layer4.0.conv2.weight"), Some(vec![512, 512, 3, 3]));
    assert_eq!(dims("fc.weight"), Some(vec![1000, 2048]));
    assert!(g.node.iter().any(|n| n.name.as_deref() == Some("maxpool")));
}

/// Signature of the nodes under `prefix`: op, attributes, and inputs (initializers by shape, values inside
/// the block by their name relative to the prefix, anything else as "outside").
fn block_signature(g: &GraphProto, prefix: &str) -> Vec<String> {
    let shapes: HashMap<&str, &Vec<i64>> = g
        .initializer
        .iter()
        .map(|t| (t.name.as_deref().unwrap(), &t.dims))
        .collect();
    g.node
        .iter()
        .filter(|n| n.name.as_deref().unwrap().starts_with(prefix))
        .map(|n| {
            let inputs: Vec<String> = n
                .input
                .iter()
                .map(|i| match (shapes.get(i.as_str()), i.strip_prefix(prefix)) {
                    (Some(s), _) => format!("param{s:?}"),
                    (None, Some(rel)) => rel.to_owned(),
                    (None, None) => "outside".to_owned(),
                })
                .collect();
            let attrs: Vec<Vec<u8>> = n.attribute.iter().map(|a| a.encode_to_vec()).collect();
            format!(
                "{} {} {:?} {:?}",
                n.name.as_deref().unwrap().strip_prefix(prefix).unwrap(),
                n.op_type.as_deref().unwrap(),
                inputs,
                attrs
            )
        })
        .collect()
}

#[test]
fn vit_blocks_are_structurally_identical() {
    let o = opts(10, 32, 0);
    let m = build_without_weights("vit-s", &o).unwrap();
    let g = graph(&m);
    let first = block_signature(g, "encoder.layers.0.");
    assert!(first.len() > 30, "{first:#?}");
    for i in 1..12 {
        assert_eq!(
            block_signature(g, &format!("encoder.layers.{i}.")),
            first,
            "block {i}"
        );
    }
    assert!(block_signature(g, "encoder.layers.12.").is_empty());
    let ops: HashSet<&str> = g
        .node
        .iter()
        .map(|n| n.op_type.as_deref().unwrap())
        .collect();
    for op in [
        "LayerNormalization",
        "Softmax",
        "Erf",
        "Expand",
        "Shape",
        "Gather",
        "Split",
        "Gemm",
    ] {
        assert!(ops.contains(op), "{op}");
    }
    let names: HashSet<&str> = g
        .initializer
        .iter()
        .map(|t| t.name.as_deref().unwrap())
        .collect();
    for n in [
        "conv_proj.weight",
        "conv_proj.bias",
        "class_token",
        "encoder.pos_embedding",
        "encoder.layers.3.ln_1.weight",
        "encoder.layers.3.self_attention.in_proj_weight",
        "encoder.layers.3.self_attention.in_proj_bias",
        "encoder.layers.3.self_attention.out_proj.weight",
        "encoder.layers.3.mlp.0.weight",
        "encoder.layers.3.mlp.3.bias",
        "encoder.ln.weight",
        "heads.head.weight",
        "heads.head.bias",
    ] {
        assert!(names.contains(n), "{n}");
    }
    // Every initializer is a learnable parameter (no shape constants among them).
    assert_eq!(parameter_count(&m).learnable, 21_342_346);
}

#[test]
fn resnet_blocks_of_a_stage_are_identical() {
    let m = build("resnet56", &ZooOptions::for_model("resnet56").unwrap()).unwrap();
    let g = graph(&m);
    for stage in 1..=3 {
        let first = block_signature(g, &format!("layer{stage}.1."));
        assert_eq!(first.len(), 7); // conv bn relu conv bn add relu
        for b in 2..9 {
            assert_eq!(
                block_signature(g, &format!("layer{stage}.{b}.")),
                first,
                "layer{stage}.{b}"
            );
        }
    }
}

#[test]
fn errors() {
    let e = build("resnet21", &opts(10, 32, 0)).unwrap_err();
    assert_eq!(
        e,
        ZooError::UnknownModel {
            name: "resnet21".into()
        }
    );
    let msg = e.to_string();
    for n in MODEL_NAMES {
        assert!(msg.contains(n), "{msg}");
    }
    assert!(ZooOptions::for_model("vgg16").is_err());

    let e = build("vit-b", &opts(1000, 100, 0)).unwrap_err();
    assert!(matches!(
        e,
        ZooError::ImageSizeNotDivisibleByPatch {
            image_size: 100,
            patch: 16,
            ..
        }
    ));
    assert!(e.to_string().contains("not divisible"), "{e}");
    assert!(build("vit-ti", &opts(10, 30, 0)).is_err());

    let e = build("resnet20", &opts(0, 32, 0)).unwrap_err();
    assert!(matches!(
        e,
        ZooError::ZeroOption {
            option: "classes",
            ..
        }
    ));
    assert!(build(
        "resnet18",
        &ZooOptions {
            channels: 0,
            ..opts(10, 32, 0)
        }
    )
    .is_err());
    assert!(build("vit-ti", &opts(10, 0, 0)).is_err());
    assert!(build_custom_resnet_cifar(0, 16, &opts(10, 32, 0)).is_err());
    assert!(matches!(
        build_custom_vit(1, 30, 4, 60, 4, &opts(10, 32, 0)).unwrap_err(),
        ZooError::DimNotDivisibleByHeads {
            dim: 30,
            heads: 4,
            ..
        }
    ));
    assert!(build_custom_vit(1, 32, 4, 64, 0, &opts(10, 32, 0)).is_err());
}

#[test]
fn other_input_shapes() {
    // Grayscale MNIST-sized inputs work for the CIFAR family and for ViTs with a matching patch.
    let o = ZooOptions {
        classes: 10,
        image_size: 28,
        channels: 1,
        seed: 0,
    };
    let m = build("resnet20", &o).unwrap();
    check_well_formed(&m, &o);
    let m = build("vit-ti", &o).unwrap();
    check_well_formed(&m, &o);
}
