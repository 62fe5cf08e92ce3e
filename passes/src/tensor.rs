//! Helpers over `TensorProto`: data types, element counts, and reading/making float tensors.

use bytes::Bytes;

use crate::onnx::{tensor_proto::DataType, TensorProto};

/// Size in bytes of one element, for fixed-size types (sub-byte types round up to one byte).
pub fn element_size(data_type: i32) -> Option<usize> {
    use DataType::*;
    Some(match DataType::try_from(data_type).ok()? {
        Float | Int32 | Uint32 => 4,
        Uint8 | Int8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz
        | Float8e8m0 => 1,
        Uint4 | Int4 | Float4e2m1 | Uint2 | Int2 => 1,
        Uint16 | Int16 | Float16 | Bfloat16 => 2,
        Int64 | Double | Uint64 | Complex64 => 8,
        Complex128 => 16,
        String | Undefined => return None,
    })
}

/// Short lowercase name of a data type (`float32`, `int64`, …), `None` if unknown.
pub fn dtype_name(data_type: i32) -> Option<&'static str> {
    use DataType::*;
    Some(match DataType::try_from(data_type).ok()? {
        Undefined => "undefined",
        Float => "float32",
        Uint8 => "uint8",
        Int8 => "int8",
        Uint16 => "uint16",
        Int16 => "int16",
        Int32 => "int32",
        Int64 => "int64",
        String => "string",
        Bool => "bool",
        Float16 => "float16",
        Double => "float64",
        Uint32 => "uint32",
        Uint64 => "uint64",
        Complex64 => "complex64",
        Complex128 => "complex128",
        Bfloat16 => "bfloat16",
        Float8e4m3fn => "float8e4m3fn",
        Float8e4m3fnuz => "float8e4m3fnuz",
        Float8e5m2 => "float8e5m2",
        Float8e5m2fnuz => "float8e5m2fnuz",
        Uint4 => "uint4",
        Int4 => "int4",
        Float4e2m1 => "float4e2m1",
        Float8e8m0 => "float8e8m0",
        Uint2 => "uint2",
        Int2 => "int2",
    })
}

/// Whether values of this type can be learned by gradient descent.
pub fn is_float(data_type: i32) -> bool {
    matches!(
        DataType::try_from(data_type),
        Ok(DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16)
    )
}

/// Number of elements (1 for a scalar).
pub fn numel(t: &TensorProto) -> u64 {
    t.dims.iter().map(|&d| d.max(0) as u64).product()
}

/// `float32[16,3,3,3]`
pub fn describe(t: &TensorProto) -> String {
    let dims: Vec<String> = t.dims.iter().map(i64::to_string).collect();
    format!(
        "{}[{}]",
        dtype_name(t.data_type()).unwrap_or("?"),
        dims.join(",")
    )
}

/// A rank-0 tensor holding one value of `data_type` (float32, float64, float16 or bfloat16).
pub fn scalar(name: &str, data_type: i32, value: f64) -> TensorProto {
    let raw: Vec<u8> = match DataType::try_from(data_type) {
        Ok(DataType::Double) => value.to_le_bytes().to_vec(),
        Ok(DataType::Float16) => f32_to_f16(value as f32).to_le_bytes().to_vec(),
        Ok(DataType::Bfloat16) => {
            (((value as f32).to_bits() + 0x7fff + (((value as f32).to_bits() >> 16) & 1)) >> 16)
                .to_le_bytes()[..2]
                .to_vec()
        }
        _ => (value as f32).to_le_bytes().to_vec(),
    };
    TensorProto {
        name: Some(name.to_owned()),
        data_type: Some(data_type),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

/// A float32 tensor from values and dims.
pub fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    TensorProto {
        name: Some(name.to_owned()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

/// The values of a float32 tensor (raw or typed storage); `None` for other types.
pub fn f32_values(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type() != DataType::Float as i32 {
        return None;
    }
    match &t.raw_data {
        Some(raw) => Some(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        None => Some(t.float_data.clone()),
    }
}

/// A tensor value_info with a static shape.
pub fn value_info(name: &str, dtype: i32, shape: &[usize]) -> crate::onnx::ValueInfoProto {
    crate::onnx::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(crate::onnx::TypeProto {
            value: Some(crate::onnx::type_proto::Value::TensorType(
                crate::onnx::type_proto::Tensor {
                    elem_type: Some(dtype),
                    shape: Some(crate::onnx::TensorShapeProto {
                        dim: shape
                            .iter()
                            .map(|&d| crate::onnx::tensor_shape_proto::Dimension {
                                value: Some(
                                    crate::onnx::tensor_shape_proto::dimension::Value::DimValue(
                                        d as i64,
                                    ),
                                ),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Round-to-nearest-even conversion to IEEE half precision.
fn f32_to_f16(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if mant != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = (mant | 0x80_0000) >> (1 - e);
        let round = (m >> 12) & 1;
        return sign | (((m >> 13) + round) as u16);
    }
    let half = sign | ((e as u16) << 10) | ((mant >> 13) as u16);
    let round = (mant >> 12) & 1 != 0 && ((mant & 0x1fff) != 0x1000 || half & 1 != 0);
    half + round as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_scalars_round_trip_common_values() {
        assert_eq!(f32_to_f16(0.5), 0x3800);
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(-2.0), 0xc000);
        assert_eq!(f32_to_f16(0.0), 0);
    }

    #[test]
    fn bfloat16_scalar_keeps_the_high_half() {
        let t = scalar("a", DataType::Bfloat16 as i32, 0.5);
        assert_eq!(t.raw_data.unwrap().as_ref(), &[0x00, 0x3f]);
    }

    #[test]
    fn describe_and_numel() {
        let t = f32_tensor("w", &[2, 3], &[0.0; 6]);
        assert_eq!(describe(&t), "float32[2,3]");
        assert_eq!(numel(&t), 6);
        assert_eq!(f32_values(&t).unwrap().len(), 6);
    }
}
