//! A small emitter of training nodes and constants, named `train/{hint}.{k}` unless a name is given.

use bytes::Bytes;

use crate::onnx::{tensor_proto::DataType, NodeProto, TensorProto};

#[derive(Default)]
pub struct Builder {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    counter: usize,
}

/// Attributes of emitted nodes: the autodiff's.
pub use crate::autodiff::Attr as A;

impl Builder {
    pub fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("train/{hint}.{}", self.counter)
    }

    /// Emits a one-output node writing `out` (a fresh name when `None`); returns the output name.
    pub fn op_to(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<(&str, A)>,
        out: Option<&str>,
    ) -> String {
        let name = self.fresh(op);
        let output = out.map(str::to_owned).unwrap_or_else(|| name.clone());
        let attribute = attrs.into_iter().map(|(n, a)| a.into_proto(n)).collect();
        self.nodes.push(NodeProto {
            op_type: Some(op.to_owned()),
            name: Some(name),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            attribute,
            ..Default::default()
        });
        output
    }

    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, A)>) -> String {
        self.op_to(op, inputs, attrs, None)
    }

    /// Attaches a note (`key`: JSON `value`) to the node writing `output`, for engines with fused kernels.
    pub fn annotate(&mut self, output: &str, key: &str, value: String) {
        crate::autodiff::annotate(&mut self.nodes, output, key, value);
    }

    /// An int64 initializer of the given dims.
    pub fn const_i64(&mut self, dims: &[usize], values: &[i64]) -> String {
        let name = self.fresh("const");
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Int64 as i32),
            raw_data: Some(Bytes::from(raw)),
            ..Default::default()
        });
        name
    }

    /// A rank-0 float initializer of `dtype`.
    pub fn scalar(&mut self, dtype: i32, value: f64) -> String {
        let name = self.fresh("const");
        self.initializers
            .push(crate::tensor::scalar(&name, dtype, value));
        name
    }
}

pub use crate::tensor::value_info;

/// A zero-filled tensor of `dtype` (float32/float64/float16/bfloat16) and static shape.
pub fn zeros(name: &str, dtype: i32, shape: &[usize]) -> TensorProto {
    let n: usize = shape.iter().product();
    let size = crate::tensor::element_size(dtype).unwrap_or(4);
    TensorProto {
        name: Some(name.to_owned()),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(dtype),
        raw_data: Some(Bytes::from(vec![0u8; n * size])),
        ..Default::default()
    }
}
