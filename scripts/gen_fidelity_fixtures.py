#!/usr/bin/env python3
"""Generate the protobuf-fidelity ONNX fixtures under tests/fixtures/fidelity/.

These models exercise as many ModelProto fields as possible so that the Rust
loader/saver can be checked for lossless round-tripping (every field, including
rarely used ones, must survive decode -> encode).

Generated with onnx==1.23.2 (see scripts/requirements-test.txt). Other onnx
versions should produce equivalent models but possibly not byte-identical files.

Usage:
    python scripts/gen_fidelity_fixtures.py [--out-dir DIR]

Default output directory: tests/fixtures/fidelity/ relative to the repo root.
All values are deterministic (fixed-seed numpy RNG), so re-running the script
reproduces the committed files byte for byte with the same onnx version.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx import onnx_pb as P

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "fidelity"

# Versions chosen so that both onnx.checker (1.23) and onnxruntime 1.31 accept
# the models. IR 11 is the first IR version with device configurations.
IR_VERSION = 11
OPSET = 21
CUSTOM_DOMAIN = "com.example.rlrewrite"
CUSTOM_OPSET = 1


def _meta(proto, **kv):
    """Append metadata_props entries (StringStringEntryProto) to any proto."""
    for k, v in kv.items():
        e = proto.metadata_props.add()
        e.key = k
        e.value = v
    return proto


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------
# metadata_everywhere.onnx
# --------------------------------------------------------------------------


def build_metadata_everywhere() -> onnx.ModelProto:
    rng = _rng(1234)

    # ---- initializers (dense) ----
    conv_w = numpy_helper.from_array(
        (rng.standard_normal((4, 3, 3, 3)) * 0.2).astype(np.float32), "conv.weight"
    )
    conv_w.doc_string = "Convolution kernel, OIHW."
    _meta(conv_w, **{"rl.origin": "gen_fidelity_fixtures", "rl.layer": "stem"})

    bias = numpy_helper.from_array(
        (rng.standard_normal((1, 4, 1, 1)) * 0.1).astype(np.float32), "add.bias"
    )
    _meta(bias, **{"rl.role": "bias"})

    fc_w = numpy_helper.from_array(
        (rng.standard_normal((64, 10)) * 0.1).astype(np.float32), "fc.weight"
    )
    fc_w.doc_string = "Fully connected weight, stored with typed float_data."
    # Store via the typed field instead of raw_data for variety.
    fc_w_typed = helper.make_tensor(
        "fc.weight",
        TensorProto.FLOAT,
        fc_w.dims,
        numpy_helper.to_array(fc_w).flatten().tolist(),
        raw=False,
    )
    fc_w_typed.doc_string = fc_w.doc_string
    _meta(fc_w_typed, **{"rl.role": "weight", "rl.storage": "float_data"})

    flat_shape = numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "flat.shape")

    scale = numpy_helper.from_array(np.array(0.5, dtype=np.float32), "fn.scale")

    # ---- sparse initializer: a [10] bias with 3 non-zeros ----
    sp_values = numpy_helper.from_array(
        np.array([0.25, -0.5, 1.0], dtype=np.float32), "fc.sparse_bias"
    )
    sp_indices = numpy_helper.from_array(np.array([1, 4, 9], dtype=np.int64), "")
    sparse_bias = helper.make_sparse_tensor(sp_values, sp_indices, [10])

    # ---- nodes ----
    conv = helper.make_node(
        "Conv",
        ["X", "conv.weight"],
        ["conv_out"],
        name="stem_conv",
        doc_string="3x3 stem convolution",
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
        strides=[1, 1],
    )
    _meta(conv, **{"rl.node": "stem_conv", "pkg.torch.stack_trace": "model.py:12"})

    add = helper.make_node("Add", ["conv_out", "add.bias"], ["add_out"], name="bias_add")
    _meta(add, **{"rl.node": "bias_add"})

    relu = helper.make_node("Relu", ["add_out"], ["relu_out"], name="relu")
    relu.doc_string = "activation"
    _meta(relu, **{"rl.node": "relu"})

    pool = helper.make_node(
        "MaxPool", ["relu_out"], ["pool_out"], name="pool", kernel_shape=[2, 2], strides=[2, 2]
    )

    reshape = helper.make_node(
        "Reshape", ["pool_out", "flat.shape"], ["flat"], name="flatten"
    )

    matmul = helper.make_node("MatMul", ["flat", "fc.weight"], ["mm_out"], name="fc")
    _meta(matmul, **{"rl.node": "fc"})
    # Device configuration / sharding annotations (IR >= 11).
    ndc = matmul.device_configurations.add()
    ndc.configuration_id = "mesh2"
    ndc.pipeline_stage = 0
    spec = ndc.sharding_spec.add()
    spec.tensor_name = "fc.weight"
    spec.device.extend([0, 1])
    ent = spec.index_to_device_group_map.add()
    ent.key = 0
    ent.value.extend([0, 1])
    sd = spec.sharded_dim.add()
    sd.axis = 1
    ssd = sd.simple_sharding.add()
    ssd.dim_value = 10
    ssd.num_shards = 2
    spec2 = ndc.sharding_spec.add()
    spec2.tensor_name = "mm_out"
    spec2.device.extend([0, 1])
    sd2 = spec2.sharded_dim.add()
    sd2.axis = 0
    ssd2 = sd2.simple_sharding.add()
    ssd2.dim_param = "N"
    ssd2.num_shards = 1

    # The sparse initializer is deliberately *not* consumed by a node: the
    # reference shape inference types it as sparse_tensor(float), which no
    # standard op accepts, so check_model would reject any use. The dense bias
    # below is produced by a Constant with a sparse_value attribute instead
    # (a dense tensor per the spec).
    bias_const = helper.make_node(
        "Constant",
        [],
        ["fc.bias_dense"],
        name="fc_bias_const",
        value=numpy_helper.from_array(np.array([0.0, 0.25, 0.0, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0, 1.0],
                                               dtype=np.float32)),
    )
    add_sparse = helper.make_node(
        "Add", ["mm_out", "fc.bias_dense"], ["logits_raw"], name="bias_add_fc"
    )

    # Call of the model-local function. Attribute `alpha` is given explicitly;
    # `beta` falls back to the function's attribute_proto default.
    fn_call = helper.make_node(
        "ScaledResidual",
        ["logits_raw", "fn.scale"],
        ["Y"],
        name="scaled_residual_call",
        domain=CUSTOM_DOMAIN,
        alpha=2.0,
    )
    fn_call.doc_string = "Calls the model-local function ScaledResidual."
    _meta(fn_call, **{"rl.node": "function_call"})

    # ---- graph inputs/outputs/value_info ----
    X = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3, 8, 8], "input image")
    _meta(X, **{"rl.io": "input", "rl.layout": "NCHW"})
    Y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 10], "logits")
    _meta(Y, **{"rl.io": "output"})

    vi_conv = helper.make_tensor_value_info("conv_out", TensorProto.FLOAT, ["N", 4, 8, 8])
    _meta(vi_conv, **{"rl.vi": "conv_out"})
    vi_relu = helper.make_tensor_value_info("relu_out", TensorProto.FLOAT, ["N", 4, 8, 8])
    vi_relu.doc_string = "post-activation"
    vi_flat = helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["N", 64])

    # Non-tensor TypeProto variants. These names are not produced by any node;
    # value_info is allowed to describe them (they are pure type annotations).
    seq_t = helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, [None, 4])
    )
    vi_seq = helper.make_value_info("annot.sequence", seq_t, "sequence(tensor(float))")
    map_t = helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [3])
    )
    vi_map = helper.make_value_info("annot.map", map_t, "map(int64, tensor(float))")
    opt_t = helper.make_optional_type_proto(
        helper.make_tensor_type_proto(TensorProto.INT32, ["K"])
    )
    vi_opt = helper.make_value_info("annot.optional", opt_t, "optional(tensor(int32))")
    sparse_t = helper.make_sparse_tensor_type_proto(TensorProto.FLOAT, [10, 10])
    vi_sparse = helper.make_value_info("annot.sparse", sparse_t, "sparse_tensor(float)")
    _meta(vi_sparse, **{"rl.vi": "sparse"})
    opt_seq_t = helper.make_optional_type_proto(
        helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.INT64, []))
    )
    vi_opt_seq = helper.make_value_info("annot.optional_sequence", opt_seq_t)
    # A tensor type with a denotation on the type and on a dimension.
    den_t = helper.make_tensor_type_proto(TensorProto.FLOAT, ["N", 4, 4, 4])
    den_t.denotation = "TENSOR"
    den_t.tensor_type.shape.dim[1].denotation = "DATA_CHANNEL"
    vi_pool = helper.make_value_info("pool_out", den_t)

    graph = helper.make_graph(
        [conv, add, relu, pool, reshape, matmul, bias_const, add_sparse, fn_call],
        "metadata_everywhere_graph",
        [X],
        [Y],
        initializer=[conv_w, bias, fc_w_typed, flat_shape, scale],
        doc_string="Graph exercising metadata_props everywhere.",
        value_info=[
            vi_conv,
            vi_relu,
            vi_pool,
            vi_flat,
            vi_seq,
            vi_map,
            vi_opt,
            vi_sparse,
            vi_opt_seq,
        ],
        sparse_initializer=[sparse_bias],
    )
    _meta(graph, **{"rl.graph": "main", "rl.note": "graph-level metadata"})
    # A quantization annotation (GraphProto.quantization_annotation).
    qa = graph.quantization_annotation.add()
    qa.tensor_name = "relu_out"
    qp = qa.quant_parameter_tensor_names.add()
    qp.key = "SCALE_TENSOR"
    qp.value = "fn.scale"

    # ---- model-local function ----
    # ScaledResidual(x, s) = x + alpha * s * x + beta
    fn_nodes = [
        helper.make_node("Constant", [], ["alpha_c"], value_float=1.0),
        helper.make_node("Constant", [], ["beta_c"], value_float=0.0),
    ]
    # Use attribute references (ref_attr_name) so the call-site attribute binds.
    fn_nodes[0].attribute[0].ref_attr_name = "alpha"
    fn_nodes[1].attribute[0].ref_attr_name = "beta"
    fn_nodes += [
        helper.make_node("Mul", ["x", "s"], ["xs"], name="fn_mul1"),
        helper.make_node("Mul", ["xs", "alpha_c"], ["axs"], name="fn_mul2"),
        helper.make_node("Add", ["x", "axs"], ["sum1"], name="fn_add1"),
        helper.make_node("Add", ["sum1", "beta_c"], ["y"], name="fn_add2"),
    ]
    _meta(fn_nodes[2], **{"rl.fn_node": "mul1"})
    fn = helper.make_function(
        CUSTOM_DOMAIN,
        "ScaledResidual",
        ["x", "s"],
        ["y"],
        fn_nodes,
        opset_imports=[helper.make_opsetid("", OPSET)],
        attributes=["alpha"],
        attribute_protos=[helper.make_attribute("beta", 0.125)],
        doc_string="y = x + alpha * s * x + beta",
        value_info=[
            helper.make_tensor_value_info("xs", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("axs", TensorProto.FLOAT, None),
        ],
    )
    _meta(fn, **{"rl.function": "ScaledResidual", "rl.version": "1"})

    # ---- training_info: one SGD-like update of fn.scale ----
    lr = numpy_helper.from_array(np.array(0.01, dtype=np.float32), "train.lr")
    algo = helper.make_graph(
        [
            helper.make_node("Mul", ["fn.scale", "train.lr"], ["train.delta"], name="t_mul"),
            helper.make_node("Sub", ["fn.scale", "train.delta"], ["fn.scale.new"], name="t_sub"),
        ],
        "training_algorithm",
        [],
        [helper.make_tensor_value_info("fn.scale.new", TensorProto.FLOAT, [])],
        initializer=[lr],
    )
    init_g = helper.make_graph(
        [
            helper.make_node(
                "Constant",
                [],
                ["fn.scale.init"],
                value=numpy_helper.from_array(np.array(0.5, dtype=np.float32)),
            )
        ],
        "training_initialization",
        [],
        [helper.make_tensor_value_info("fn.scale.init", TensorProto.FLOAT, [])],
    )
    ti = P.TrainingInfoProto()
    ti.algorithm.CopyFrom(algo)
    ti.initialization.CopyFrom(init_g)
    b = ti.update_binding.add()
    b.key = "fn.scale"
    b.value = "fn.scale.new"
    b = ti.initialization_binding.add()
    b.key = "fn.scale"
    b.value = "fn.scale.init"

    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", OPSET),
            helper.make_opsetid(CUSTOM_DOMAIN, CUSTOM_OPSET),
            helper.make_opsetid("ai.onnx.ml", 5),
        ],
        producer_name="rl-rewrite-fixtures",
        producer_version="1.0",
        domain="com.example.rlrewrite",
        model_version=7,
        doc_string="Fidelity fixture: metadata_props and rarely-used fields everywhere.",
        functions=[fn],
    )
    model.training_info.append(ti)
    model.ir_version = IR_VERSION
    _meta(model, **{"rl.fixture": "metadata_everywhere", "author": "rl-rewrite", "license": "MIT"})

    # ---- device configuration (ModelProto.configuration, IR >= 11) ----
    cfg = model.configuration.add()
    cfg.name = "mesh2"
    cfg.num_devices = 2
    cfg.device.extend(["device:0", "device:1"])
    return model


# --------------------------------------------------------------------------
# dtypes.onnx
# --------------------------------------------------------------------------


def _bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (round-to-nearest-even) as uint16."""
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounding = ((u >> 16) & 1) + 0x7FFF
    return ((u + rounding) >> 16).astype(np.uint16)


def _raw(name: str, dtype: int, dims, data: bytes) -> TensorProto:
    t = TensorProto()
    t.name = name
    t.data_type = dtype
    t.dims.extend(dims)
    t.raw_data = data
    return t


def build_dtypes() -> onnx.ModelProto:
    f32 = np.array([[0.0, -1.5, 3.25], [1e-3, 65504.0, -0.0]], dtype=np.float32)
    inits: list[TensorProto] = []

    # ---- raw_data variants (little-endian) ----
    inits.append(_raw("raw_float32", TensorProto.FLOAT, [2, 3], f32.tobytes()))
    inits.append(
        _raw("raw_float16", TensorProto.FLOAT16, [2, 3], f32.astype(np.float16).tobytes())
    )
    inits.append(_raw("raw_bfloat16", TensorProto.BFLOAT16, [2, 3], _bf16_bits(f32).tobytes()))
    inits.append(
        _raw("raw_double", TensorProto.DOUBLE, [3], np.array([np.pi, -1e300, 2.5]).tobytes())
    )
    inits.append(
        _raw("raw_int8", TensorProto.INT8, [4], np.array([-128, -1, 0, 127], np.int8).tobytes())
    )
    inits.append(
        _raw("raw_uint8", TensorProto.UINT8, [4], np.array([0, 1, 128, 255], np.uint8).tobytes())
    )
    inits.append(
        _raw(
            "raw_int16", TensorProto.INT16, [3], np.array([-32768, 7, 32767], np.int16).tobytes()
        )
    )
    inits.append(
        _raw(
            "raw_uint16", TensorProto.UINT16, [2], np.array([0, 65535], np.uint16).tobytes()
        )
    )
    inits.append(
        _raw(
            "raw_int32",
            TensorProto.INT32,
            [3],
            np.array([-(2**31), 0, 2**31 - 1], np.int32).tobytes(),
        )
    )
    inits.append(
        _raw(
            "raw_int64",
            TensorProto.INT64,
            [2, 2],
            np.array([[-(2**63), -1], [0, 2**63 - 1]], np.int64).tobytes(),
        )
    )
    inits.append(
        _raw(
            "raw_uint32", TensorProto.UINT32, [2], np.array([0, 2**32 - 1], np.uint32).tobytes()
        )
    )
    inits.append(
        _raw(
            "raw_uint64", TensorProto.UINT64, [2], np.array([1, 2**64 - 1], np.uint64).tobytes()
        )
    )
    inits.append(
        _raw("raw_bool", TensorProto.BOOL, [4], np.array([True, False, False, True]).tobytes())
    )
    # Newer small types (raw_data only): float8 variants (1 byte each) and
    # 4-bit integers (two values per byte, low nibble first).
    inits.append(
        _raw("raw_float8e4m3fn", TensorProto.FLOAT8E4M3FN, [4], bytes([0x00, 0x38, 0xB8, 0x7E]))
    )
    inits.append(
        _raw("raw_float8e5m2", TensorProto.FLOAT8E5M2, [4], bytes([0x00, 0x3C, 0xBC, 0x7B]))
    )
    inits.append(_raw("raw_int4", TensorProto.INT4, [5], bytes([0x81, 0x7F, 0x03])))
    inits.append(_raw("raw_uint4", TensorProto.UINT4, [4], bytes([0x10, 0xFE])))
    # Scalar and empty tensors.
    inits.append(_raw("raw_scalar_float32", TensorProto.FLOAT, [], np.float32(7.5).tobytes()))
    inits.append(_raw("raw_empty_float32", TensorProto.FLOAT, [0, 3], b""))

    # ---- typed-field variants ----
    inits.append(
        helper.make_tensor("typed_float32", TensorProto.FLOAT, [2, 3], f32.flatten().tolist())
    )
    # float16 / bfloat16 go into int32_data as bit patterns.
    t = TensorProto(name="typed_float16", data_type=TensorProto.FLOAT16, dims=[2, 3])
    t.int32_data.extend(f32.astype(np.float16).view(np.uint16).astype(np.int32).flatten().tolist())
    inits.append(t)
    t = TensorProto(name="typed_bfloat16", data_type=TensorProto.BFLOAT16, dims=[2, 3])
    t.int32_data.extend(_bf16_bits(f32).astype(np.int32).flatten().tolist())
    inits.append(t)
    t = TensorProto(name="typed_double", data_type=TensorProto.DOUBLE, dims=[3])
    t.double_data.extend([np.pi, -1e300, 2.5])
    inits.append(t)
    for name, dt, vals in [
        ("typed_int8", TensorProto.INT8, [-128, -1, 0, 127]),
        ("typed_uint8", TensorProto.UINT8, [0, 1, 128, 255]),
        ("typed_int16", TensorProto.INT16, [-32768, 7, 32767]),
        ("typed_uint16", TensorProto.UINT16, [0, 65535]),
        ("typed_int32", TensorProto.INT32, [-(2**31), 0, 2**31 - 1]),
        ("typed_bool", TensorProto.BOOL, [1, 0, 0, 1]),
    ]:
        t = TensorProto(name=name, data_type=dt, dims=[len(vals)])
        t.int32_data.extend(vals)
        inits.append(t)
    t = TensorProto(name="typed_int64", data_type=TensorProto.INT64, dims=[2, 2])
    t.int64_data.extend([-(2**63), -1, 0, 2**63 - 1])
    inits.append(t)
    t = TensorProto(name="typed_uint32", data_type=TensorProto.UINT32, dims=[2])
    t.uint64_data.extend([0, 2**32 - 1])
    inits.append(t)
    t = TensorProto(name="typed_uint64", data_type=TensorProto.UINT64, dims=[2])
    t.uint64_data.extend([1, 2**64 - 1])
    inits.append(t)
    t = TensorProto(name="typed_string", data_type=TensorProto.STRING, dims=[3])
    t.string_data.extend([b"hello", b"", "\u00fcnic\u00f8de \u2603".encode("utf-8")])
    inits.append(t)
    t = TensorProto(name="typed_scalar_int64", data_type=TensorProto.INT64, dims=[])
    t.int64_data.append(42)
    inits.append(t)

    # ---- one graph output per initializer via Identity ----
    nodes = []
    outputs = []
    # (bfloat16, float8 and 4-bit types are Cast to float32/int8 because
    # onnxruntime's Python API cannot return them as numpy arrays.)
    CAST_TO = {
        TensorProto.FLOAT8E4M3FN: TensorProto.FLOAT,
        TensorProto.FLOAT8E5M2: TensorProto.FLOAT,
        TensorProto.INT4: TensorProto.INT8,
        TensorProto.UINT4: TensorProto.UINT8,
    }
    for init in inits:
        out = f"out_{init.name}"
        if init.data_type in CAST_TO:
            nodes.append(
                helper.make_node(
                    "Cast", [init.name], [out], name=f"cast_{init.name}", to=CAST_TO[init.data_type]
                )
            )
            out_type = CAST_TO[init.data_type]
        elif init.data_type == TensorProto.BFLOAT16:
            nodes.append(
                helper.make_node(
                    "Cast", [init.name], [out], name=f"cast_{init.name}", to=TensorProto.FLOAT
                )
            )
            out_type = TensorProto.FLOAT
        else:
            nodes.append(helper.make_node("Identity", [init.name], [out], name=f"id_{init.name}"))
            out_type = init.data_type
        outputs.append(helper.make_tensor_value_info(out, out_type, list(init.dims)))

    # ---- If node (GRAPH attributes) selected by a runtime input ----
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    then_g = helper.make_graph(
        [helper.make_node("Add", ["x", "raw_float32"], ["then_out"], name="then_add")],
        "then_branch",
        [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [2, 3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["x", "raw_float32"], ["else_out"], name="else_sub")],
        "else_branch",
        [],
        [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [2, 3])],
    )
    nodes.append(
        helper.make_node(
            "If", ["cond"], ["if_out"], name="if_node", then_branch=then_g, else_branch=else_g
        )
    )
    outputs.append(helper.make_tensor_value_info("if_out", TensorProto.FLOAT, [2, 3]))

    # ---- Constant nodes: one per Constant value_* attribute kind ----
    const_attrs = {
        "value": numpy_helper.from_array(np.array([1.0, 2.0], np.float32)),  # TENSOR
        "value_float": 0.5,  # FLOAT
        "value_int": 3,  # INT
        "value_string": "const",  # STRING
        "value_floats": [1.0, 2.5],  # FLOATS
        "value_ints": [4, 5, 6],  # INTS
        "value_strings": ["a", "bc"],  # STRINGS
    }
    const_types = {
        "value": (TensorProto.FLOAT, [2]),
        "value_float": (TensorProto.FLOAT, []),
        "value_int": (TensorProto.INT64, []),
        "value_string": (TensorProto.STRING, []),
        "value_floats": (TensorProto.FLOAT, [2]),
        "value_ints": (TensorProto.INT64, [3]),
        "value_strings": (TensorProto.STRING, [2]),
    }
    for attr, val in const_attrs.items():
        out = f"const_{attr}"
        nodes.append(helper.make_node("Constant", [], [out], name=f"c_{attr}", **{attr: val}))
        dt, dims = const_types[attr]
        outputs.append(helper.make_tensor_value_info(out, dt, dims))
    # Constant with a SPARSE_TENSOR attribute: a [2, 4] matrix with 2 non-zeros,
    # indices in COO form [NNZ, rank]. (onnxruntime returns this output as a
    # SparseTensor and only supports 2-D sparse constants.)
    sp = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([5.0, 6.0], np.float32)),
        numpy_helper.from_array(np.array([[0, 0], [1, 3]], np.int64)),
        [2, 4],
    )
    nodes.append(
        helper.make_node("Constant", [], ["const_sparse_value"], name="c_sparse_value",
                         sparse_value=sp)
    )
    outputs.append(helper.make_tensor_value_info("const_sparse_value", TensorProto.FLOAT, [2, 4]))

    # ---- one node carrying every attribute type: call of a model-local
    # function that declares them all (the body ignores them) ----
    sub_g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["g_out"])],
        "attr_graph",
        [],
        [helper.make_tensor_value_info("g_out", TensorProto.FLOAT, [2, 3])],
    )
    sub_g2 = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["g2_out"])],
        "attr_graph2",
        [],
        [helper.make_tensor_value_info("g2_out", TensorProto.FLOAT, [2, 3])],
    )
    all_attrs = dict(
        a_float=1.25,
        a_int=-7,
        a_string="s\u00e9",
        a_tensor=numpy_helper.from_array(np.array([[1, 2], [3, 4]], np.int32), "a_tensor"),
        a_graph=sub_g,
        a_floats=[0.5, -0.25, 3.0],
        a_ints=[1, -2, 3, 2**40],
        a_strings=["x", "", "yz"],
        a_tensors=[
            numpy_helper.from_array(np.array([1.5], np.float32), "t0"),
            numpy_helper.from_array(np.array([7, 8], np.int64), "t1"),
        ],
        a_graphs=[sub_g, sub_g2],
        a_sparse_tensor=sp,
        a_sparse_tensors=[sp, sp],
        a_type_proto=helper.make_tensor_type_proto(TensorProto.FLOAT, [2, "M"]),
        a_type_protos=[
            helper.make_tensor_type_proto(TensorProto.INT64, [3]),
            helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [])),
        ],
    )
    all_node = helper.make_node(
        "AllAttrs", ["x"], ["all_attrs_out"], name="all_attrs", domain=CUSTOM_DOMAIN, **all_attrs
    )
    all_node.attribute[0].doc_string = "attribute with a doc_string"
    fn = helper.make_function(
        CUSTOM_DOMAIN,
        "AllAttrs",
        ["inp"],
        ["outp"],
        [helper.make_node("Identity", ["inp"], ["outp"])],
        opset_imports=[helper.make_opsetid("", OPSET)],
        attributes=sorted(all_attrs),
    )
    nodes.append(all_node)
    outputs.append(helper.make_tensor_value_info("all_attrs_out", TensorProto.FLOAT, [2, 3]))

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph(nodes, "dtypes_graph", [x, cond], outputs, initializer=inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(CUSTOM_DOMAIN, 1)],
        producer_name="rl-rewrite-fixtures",
        producer_version="1.0",
        functions=[fn],
    )
    model.ir_version = IR_VERSION
    return model


# --------------------------------------------------------------------------
# external/model.onnx (+ model.onnx.data)
# --------------------------------------------------------------------------


def build_external() -> onnx.ModelProto:
    rng = _rng(99)
    w1 = (rng.standard_normal((64, 48)) * 0.1).astype(np.float32)  # 12 KiB -> external
    b1 = (rng.standard_normal((48,)) * 0.1).astype(np.float32)  # 192 B -> inline
    w2 = (rng.standard_normal((48, 32)) * 0.1).astype(np.float32)  # 6 KiB -> external
    b2 = (rng.standard_normal((32,)) * 0.1).astype(np.float32)  # inline
    w3 = (rng.standard_normal((32, 10)) * 0.1).astype(np.float32)  # 1280 B -> external
    b3 = (rng.standard_normal((10,)) * 0.1).astype(np.float32)  # inline
    emb = (rng.standard_normal((100, 64)) * 0.1).astype(np.float32)  # 25 KiB -> external
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in [
            (w1, "fc1.weight"),
            (b1, "fc1.bias"),
            (w2, "fc2.weight"),
            (b2, "fc2.bias"),
            (w3, "fc3.weight"),
            (b3, "fc3.bias"),
            (emb, "embed.weight"),
        ]
    ]
    nodes = [
        helper.make_node("Gather", ["embed.weight", "ids"], ["e"], name="embed", axis=0),
        helper.make_node("ReduceMean", ["e"], ["pooled"], name="pool", axes=None, keepdims=0),
        helper.make_node("Add", ["x", "pooled"], ["h0"], name="mix"),
        helper.make_node("Gemm", ["h0", "fc1.weight", "fc1.bias"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("Gemm", ["a1", "fc2.weight", "fc2.bias"], ["h2"], name="fc2"),
        helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
        helper.make_node("Gemm", ["a2", "fc3.weight", "fc3.bias"], ["y"], name="fc3"),
    ]
    # ReduceMean over axis 1 of [B, S, 64] using the opset-18+ axes input.
    axes = numpy_helper.from_array(np.array([1], np.int64), "pool.axes")
    inits.append(axes)
    nodes[1] = helper.make_node("ReduceMean", ["e", "pool.axes"], ["pooled"], name="pool",
                                keepdims=0)
    graph = helper.make_graph(
        nodes,
        "external_mlp",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 64]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", 5]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 10])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="rl-rewrite-fixtures",
        producer_version="1.0",
    )
    model.ir_version = IR_VERSION
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)

    if onnx.__version__ != "1.23.2":
        print(
            f"warning: fixtures were generated with onnx 1.23.2, running {onnx.__version__}",
            file=sys.stderr,
        )

    m = build_metadata_everywhere()
    onnx.save(m, out / "metadata_everywhere.onnx")

    m = build_dtypes()
    onnx.save(m, out / "dtypes.onnx")

    ext_dir = out / "external"
    if ext_dir.exists():
        shutil.rmtree(ext_dir)
    ext_dir.mkdir()
    m = build_external()
    # Tensors of >= 1024 bytes go to model.onnx.data; smaller ones stay inline.
    onnx.save(
        m,
        ext_dir / "model.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=1024,
    )

    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"{p.relative_to(out)}: {p.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
