//! Tensors on the host: what every engine takes and returns, whatever it keeps internally.

use rl_passes::onnx::tensor_proto::DataType;

/// The element types the engines exchange with the host: float32 for data and parameters, int64 for labels,
/// counts and indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    F32,
    I64,
}

impl ElementType {
    /// The type of an ONNX `elem_type`, `None` for types the engines do not exchange.
    pub fn from_onnx(elem_type: i32) -> Option<ElementType> {
        match DataType::try_from(elem_type).ok()? {
            DataType::Float => Some(ElementType::F32),
            DataType::Int64 => Some(ElementType::I64),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ElementType::F32 => "float32",
            ElementType::I64 => "int64",
        }
    }
}

/// The values of a host tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A dense tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl HostTensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> HostTensor {
        HostTensor {
            shape,
            data: TensorData::F32(data),
        }
    }

    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> HostTensor {
        HostTensor {
            shape,
            data: TensorData::I64(data),
        }
    }

    pub fn element_type(&self) -> ElementType {
        match self.data {
            TensorData::F32(_) => ElementType::F32,
            TensorData::I64(_) => ElementType::I64,
        }
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The float32 values, `None` for another type.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }

    /// The int64 values, `None` for another type.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }

    /// The values widened to f64, whatever their type (for summaries and comparisons).
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    /// Checks that the values fill the shape, naming the tensor otherwise.
    pub fn check_size(&self, name: &str) -> Result<(), String> {
        let expected: usize = self.shape.iter().product();
        if expected == self.len() {
            Ok(())
        } else {
            Err(format!(
                "'{name}' has shape {:?} ({expected} values) but holds {} values",
                self.shape,
                self.len()
            ))
        }
    }

    /// Largest absolute difference to `other`, `None` when shapes or element types differ.
    pub fn max_abs_diff(&self, other: &HostTensor) -> Option<f64> {
        if self.shape != other.shape || self.element_type() != other.element_type() {
            return None;
        }
        Some(
            self.to_f64()
                .iter()
                .zip(other.to_f64())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_sizes_and_differences() {
        let a = HostTensor::f32(vec![2], vec![1.0, 2.0]);
        let b = HostTensor::f32(vec![2], vec![1.0, 2.5]);
        assert_eq!(a.max_abs_diff(&b), Some(0.5));
        let labels = HostTensor::i64(vec![2], vec![1, 2]);
        assert_eq!(labels.element_type(), ElementType::I64);
        assert_eq!(a.max_abs_diff(&labels), None, "types differ");
        assert!(HostTensor::f32(vec![3], vec![0.0])
            .check_size("x")
            .unwrap_err()
            .contains("'x' has shape [3]"));
        assert_eq!(
            ElementType::from_onnx(DataType::Int64 as i32),
            Some(ElementType::I64)
        );
        assert_eq!(ElementType::from_onnx(DataType::Bfloat16 as i32), None);
    }
}
