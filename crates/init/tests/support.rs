//! Fixture loading shared by the test modules.

use std::path::PathBuf;
use std::sync::OnceLock;

use weightkit_core::{DType, Tensor};

use crate::json::Json;

pub(crate) fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/init")
}

pub(crate) fn manifest() -> &'static Json {
    static M: OnceLock<Json> = OnceLock::new();
    M.get_or_init(|| {
        let s = std::fs::read_to_string(testdata().join("manifest.json")).expect("manifest");
        Json::parse(&s)
    })
}

pub(crate) fn blob(file: &str) -> Vec<u8> {
    std::fs::read(testdata().join(file)).expect("fixture blob")
}

pub(crate) fn dtype(name: &str) -> DType {
    match name {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => panic!("dtype {other}"),
    }
}

pub(crate) fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub(crate) fn values(t: &Tensor) -> Vec<f32> {
    t.view().to_f32_vec().unwrap()
}

/// Distance in units in the last place between two floats of one dtype,
/// from their raw little-endian bytes.
pub(crate) fn max_ulp(a: &[u8], b: &[u8], dtype: DType) -> u64 {
    assert_eq!(a.len(), b.len());
    let key = |bits: i64, width: u32| -> i64 {
        let sign = 1i64 << (width - 1);
        if bits & sign != 0 {
            -(bits & (sign - 1))
        } else {
            bits
        }
    };
    if dtype == DType::F32 {
        a.chunks_exact(4)
            .zip(b.chunks_exact(4))
            .map(|(x, y)| {
                let x = i64::from(u32::from_le_bytes([x[0], x[1], x[2], x[3]]));
                let y = i64::from(u32::from_le_bytes([y[0], y[1], y[2], y[3]]));
                (key(x, 32) - key(y, 32)).unsigned_abs()
            })
            .max()
            .unwrap_or(0)
    } else {
        a.chunks_exact(2)
            .zip(b.chunks_exact(2))
            .map(|(x, y)| {
                let x = i64::from(u16::from_le_bytes([x[0], x[1]]));
                let y = i64::from(u16::from_le_bytes([y[0], y[1]]));
                (key(x, 16) - key(y, 16)).unsigned_abs()
            })
            .max()
            .unwrap_or(0)
    }
}
