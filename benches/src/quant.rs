//! Helpers for the quantization benchmarks (`benches/quant.rs`): the input
//! data llama.cpp's `tests/test-quantize-perf` measures on, and llama.cpp's
//! own throughput on the reference machine, so a report can print the ratio
//! between the two.
//!
//! The figures come from `shared/ggml-reference/PERF.md` (beside the
//! repository's clone): `test-quantize-perf` at llama.cpp commit
//! `0c1e57098bba43ac29e6e3b677cdceebdd22334f`, Release, AVX2/FMA/F16C on,
//! AVX-512 off, single thread, 4096 values per call (its default "L1" size),
//! 2000 iterations, on a 2-core 2.6 GHz Xeon with AVX2, AVX-512 and AVX-VNNI
//! (the kind of machine CI runs on). Throughput is in GB/s of float32
//! data, GB = 2^30 bytes, as `test-quantize-perf` prints it and as our
//! benchmarks report it (`Throughput::Bytes` of `4 * n_values`; criterion's
//! `GiB/s` is the same unit).

use weightkit_core::DType;

/// Values per call in llama.cpp's measurements (`test-quantize-perf`'s
/// default size, `L1_SIZE = 32 * 128`): one 4096-wide row.
pub const REFERENCE_VALUES: usize = 4096;

/// llama.cpp's synthetic input, `generate_data` in `test-quantize-perf`:
/// `dst[i] = 0.1 + 2 * cosf(i + offset)` for `i` in `0..n`, with the sum
/// computed in `f32` (C converts the index to `float`) and the rest in
/// `f64` (`0.1` is a double literal) before rounding to `f32`.
///
/// llama.cpp quantizes `offset = 0` for the weights and `offset = 1` for the
/// dot product's other operand. Rust's `cos` may differ from glibc's `cosf`
/// in the last bit; that does not matter for timing.
pub fn generate_data(offset: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            #[allow(clippy::cast_precision_loss)]
            let arg = i as f32 + offset;
            (0.1 + 2.0 * f64::from(arg.cos())) as f32
        })
        .collect()
}

/// A column of `test-quantize-perf`'s output (its `--op` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PerfOp {
    /// `quantize_row_q_reference`: the scalar reference quantizer, what
    /// `ggml_quantize_chunk` (and so `llama-quantize`) runs without an
    /// importance matrix. Compare with our `quantize`.
    QuantizeRowQReference,
    /// `quantize_row_q`: ggml-cpu's `from_float` for the weight type (the
    /// reference path except for q8_0, which has a SIMD one).
    QuantizeRowQ,
    /// `dequantize_row_q`: the type's `to_float`. Compare with our
    /// `dequantize`.
    DequantizeRowQ,
    /// `quantize_row_q_dot`: quantizing activations to the dot product's
    /// partner type (q8_0, q8_1 or q8_K).
    QuantizeRowQDot,
    /// `vec_dot_q`: ggml-cpu's (AVX2) dot product against the partner type.
    /// Compare with our `vec_dot_*`.
    VecDotQ,
}

impl PerfOp {
    /// Every column, in PERF.md's order.
    pub const ALL: [PerfOp; 5] = [
        PerfOp::QuantizeRowQReference,
        PerfOp::QuantizeRowQ,
        PerfOp::DequantizeRowQ,
        PerfOp::QuantizeRowQDot,
        PerfOp::VecDotQ,
    ];

    /// The column's name in PERF.md and `test-quantize-perf --op`.
    pub fn name(self) -> &'static str {
        match self {
            PerfOp::QuantizeRowQReference => "quantize_row_q_reference",
            PerfOp::QuantizeRowQ => "quantize_row_q",
            PerfOp::DequantizeRowQ => "dequantize_row_q",
            PerfOp::QuantizeRowQDot => "quantize_row_q_dot",
            PerfOp::VecDotQ => "vec_dot_q",
        }
    }

    fn column(self) -> usize {
        match self {
            PerfOp::QuantizeRowQReference => 0,
            PerfOp::QuantizeRowQ => 1,
            PerfOp::DequantizeRowQ => 2,
            PerfOp::QuantizeRowQDot => 3,
            PerfOp::VecDotQ => 4,
        }
    }
}

/// PERF.md's table: per type, GB/s in [`PerfOp::ALL`]'s order.
const LLAMA_CPP_GBPS: [(DType, [f64; 5]); 10] = [
    (DType::Q4_0, [2.37, 2.38, 9.16, 14.25, 79.68]),
    (DType::Q4_1, [2.72, 2.74, 8.84, 8.59, 85.01]),
    (DType::Q5_0, [1.51, 1.54, 5.07, 14.33, 65.35]),
    (DType::Q5_1, [1.76, 1.75, 4.80, 8.82, 65.91]),
    (DType::Q8_0, [1.09, 15.22, 31.59, 15.37, 72.66]),
    (DType::Q2_K, [0.07, 0.07, 5.03, 4.16, 118.75]),
    (DType::Q3_K, [0.84, 0.85, 3.84, 4.16, 45.21]),
    (DType::Q4_K, [0.06, 0.06, 25.37, 4.26, 64.93]),
    (DType::Q5_K, [0.08, 0.08, 19.80, 4.32, 47.31]),
    (DType::Q6_K, [0.15, 0.15, 4.30, 4.24, 47.54]),
];

/// llama.cpp's single-thread throughput for `op` on `dtype` on the
/// reference machine, in GB/s (2^30 bytes) of float32-equivalent data, as
/// PERF.md records it; `None` for types it did not measure (everything but
/// q4_0, q4_1, q5_0, q5_1, q8_0 and q2_K..q6_K).
///
/// The ratio "ours / this" is the number to watch; both come from 4096-value
/// calls on one core, but PERF.md was measured once, so compare against it
/// only numbers from the same kind of machine.
pub fn llama_cpp_reference_gbps(dtype: DType, op: PerfOp) -> Option<f64> {
    LLAMA_CPP_GBPS
        .iter()
        .find(|(d, _)| *d == dtype)
        .map(|(_, row)| row[op.column()])
}

/// The types PERF.md measured, in its order.
pub fn llama_cpp_reference_types() -> impl Iterator<Item = DType> {
    LLAMA_CPP_GBPS.iter().map(|(d, _)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_holds_perf_md_figures() {
        use PerfOp::*;
        let gbps = llama_cpp_reference_gbps;
        assert_eq!(gbps(DType::Q4_0, QuantizeRowQReference), Some(2.37));
        assert_eq!(gbps(DType::Q4_0, VecDotQ), Some(79.68));
        assert_eq!(gbps(DType::Q8_0, QuantizeRowQ), Some(15.22));
        assert_eq!(gbps(DType::Q8_0, DequantizeRowQ), Some(31.59));
        assert_eq!(gbps(DType::Q2_K, VecDotQ), Some(118.75));
        assert_eq!(gbps(DType::Q4_K, QuantizeRowQReference), Some(0.06));
        assert_eq!(gbps(DType::Q5_K, QuantizeRowQDot), Some(4.32));
        assert_eq!(gbps(DType::Q6_K, DequantizeRowQ), Some(4.30));
        assert_eq!(gbps(DType::IQ4_NL, VecDotQ), None);
        assert_eq!(gbps(DType::F32, DequantizeRowQ), None);
        assert_eq!(llama_cpp_reference_types().count(), 10);
    }

    /// Every cell of the table against PERF.md itself, where the shared
    /// folder sits beside the clone (`<clone>/../shared`); skipped otherwise.
    #[test]
    fn table_matches_perf_md_when_present() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/ggml-reference/PERF.md");
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("{} not found; skipped", path.display());
            return;
        };
        let mut rows = 0;
        for line in text.lines() {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
            let Some(dtype) = cells.first().and_then(|n| DType::from_ggml_name(n.trim())) else {
                continue;
            };
            assert_eq!(cells.len(), 6, "row {line:?}");
            for (op, cell) in PerfOp::ALL.iter().zip(&cells[1..]) {
                // "130.1 cyc / 2.37"
                let value: f64 = cell
                    .rsplit('/')
                    .next()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("cell {cell:?} of {line:?}"));
                assert_eq!(
                    llama_cpp_reference_gbps(dtype, *op),
                    Some(value),
                    "{dtype:?} {}",
                    op.name()
                );
            }
            rows += 1;
        }
        assert_eq!(rows, llama_cpp_reference_types().count());
    }

    #[test]
    fn generate_data_is_llama_cpp_formula() {
        let d = generate_data(0.0, 4);
        assert_eq!(d.len(), 4);
        assert!((d[0] - 2.1).abs() < 1e-6);
        assert!((d[1] - (0.1 + 2.0 * 1f32.cos())).abs() < 1e-6);
        let e = generate_data(1.0, 2);
        assert_eq!(e[0], d[1]);
    }
}
