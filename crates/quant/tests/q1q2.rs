//! Q1_0 and Q2_0 against llama.cpp's own bytes, floats and dot products
//! (`testdata/ggml-reference-q1q2/`, made by
//! `xtask/interop/make_q1q2_reference.py` from the inputs of
//! `testdata/ggml-reference/`; see its README): the quantizers byte for
//! byte at every level (with and without the importance vector, which both
//! types ignore), the dequantizers bit for bit, and the dot products with
//! ggml-cpu's Q8_0 rows within test-quantize-fns' tolerance of ggml-cpu's
//! `vec_dot` (and, tighter, within the f32 rounding of a different
//! accumulation order).

use bytemuck::Pod;
use weightkit_core::DType;
use weightkit_quant::legacy::{self, BlockQ1_0, BlockQ2_0};
use weightkit_quant::simd::dispatch;

use crate::iquants::{COLS, DISTS, ROWS, blocks, read, read_f32};
use crate::simd::levels;

/// Bytes of one `block_q8_0`.
const Q8_0_BYTES: usize = 34;

/// `sum |d_x d_y| sum |2 q|` over the Q8_0 blocks of a row (`x` raw Q1_0
/// or Q2_0 blocks of `qk` values, f16 scale first; `y` raw Q8_0 blocks):
/// at least the magnitude of every term of the dot (|value| <= 2).
fn magnitude(x: &[u8], y: &[u8], qk: usize) -> f64 {
    let h = |b: &[u8]| f64::from(half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32());
    let mut mag = 0.0;
    for (xb, yb) in x.chunks_exact(18).zip(y.chunks_exact(qk / 32 * Q8_0_BYTES)) {
        for yk in yb.chunks_exact(Q8_0_BYTES) {
            let s: f64 = yk[2..]
                .iter()
                .map(|&q| f64::from((q as i8).unsigned_abs()))
                .sum();
            mag += (h(xb) * h(yk)).abs() * 2.0 * s;
        }
    }
    mag
}

type RowQuantAt<B> =
    fn(weightkit_quant::simd::Level, &[f32], &mut [B]) -> Result<(), weightkit_quant::QuantError>;
type MatrixQuantAt<B> = fn(
    weightkit_quant::simd::Level,
    &[f32],
    &mut [B],
    usize,
    Option<&[f32]>,
) -> Result<(), weightkit_quant::QuantError>;
type DequantAt<B> =
    fn(weightkit_quant::simd::Level, &[B], &mut [f32]) -> Result<(), weightkit_quant::QuantError>;
type DotAt<B> =
    fn(weightkit_quant::simd::Level, &[B], &[u8]) -> Result<f32, weightkit_quant::QuantError>;

struct Kernels<B> {
    name: &'static str,
    dtype: DType,
    qk: usize,
    row: RowQuantAt<B>,
    matrix: MatrixQuantAt<B>,
    dequant: DequantAt<B>,
    dot: DotAt<B>,
    /// test-quantize-fns' dot product threshold for the type.
    dot_threshold: f64,
}

fn check_reference<B: Pod + PartialEq + std::fmt::Debug>(k: &Kernels<B>) {
    let imatrix = read_f32("ggml-reference/imatrix.f32");
    let row_blocks = COLS / k.qk;
    let row_bytes = row_blocks * size_of::<B>();
    for dist in DISTS {
        let x = read_f32(&format!("ggml-reference/{dist}.f32"));
        assert_eq!(x.len(), ROWS * COLS);
        let stem = format!("ggml-reference-q1q2/{dist}_{}", k.name);
        let want_q = read(&format!("{stem}.q"));
        let want_qi = read(&format!("{stem}_imatrix.q"));
        let want_deq = read_f32(&format!("{stem}.deq.f32"));
        let want_dots = read_f32(&format!("{stem}.dot.f32"));
        let yq = read(&format!("ggml-reference-q1q2/{dist}_q8_0_cpu.q"));
        assert_eq!(want_q.len(), ROWS * row_bytes, "{stem}");
        assert_eq!(want_qi, want_q, "{stem}: ggml ignores the importance");

        // ggml-cpu's Q8_0 rows (its AVX2 `quantize_row_q8_0` rounds ties to
        // even where the reference rounds them away from zero, so they are
        // not always the reference bytes): the dots take them as they are.
        assert_eq!(yq.len(), ROWS * COLS / 32 * Q8_0_BYTES, "{dist} q8_0");

        for level in levels() {
            let mut got = vec![B::zeroed(); ROWS * row_blocks];
            (k.row)(level, &x, &mut got).unwrap();
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&got),
                &want_q[..],
                "{stem} at {level:?}"
            );
            for w in [None, Some(&imatrix[..])] {
                let mut got = vec![B::zeroed(); ROWS * row_blocks];
                (k.matrix)(level, &x, &mut got, COLS, w).unwrap();
                assert_eq!(
                    bytemuck::cast_slice::<_, u8>(&got),
                    &want_q[..],
                    "{stem} (matrix, importance {}) at {level:?}",
                    w.is_some()
                );
            }
            let ref_blocks: Vec<B> = blocks(&want_q);
            let mut y = vec![f32::NAN; x.len()];
            (k.dequant)(level, &ref_blocks, &mut y).unwrap();
            if let Some(i) = (0..y.len()).find(|&i| y[i].to_bits() != want_deq[i].to_bits()) {
                panic!(
                    "{stem}.deq.f32 at {level:?}: element {i}: {} vs {}",
                    y[i], want_deq[i]
                );
            }
            for r in 0..ROWS {
                let xr = &ref_blocks[r * row_blocks..(r + 1) * row_blocks];
                let o = (r + 1) % ROWS * COLS / 32 * Q8_0_BYTES;
                let yr = &yq[o..o + COLS / 32 * Q8_0_BYTES];
                let got = (k.dot)(level, xr, yr).unwrap();
                let want = want_dots[r];
                // test-quantize-fns' measure: the error per value.
                let err = (f64::from(got) - f64::from(want)).abs() / COLS as f64;
                assert!(
                    err < k.dot_threshold,
                    "{stem} row {r} at {level:?}: dot {got} vs llama.cpp {want}"
                );
                // Both sum the same exact integers; only the f32 order
                // differs: within a few ulps of the terms' magnitude.
                let mag = magnitude(bytemuck::cast_slice(xr), yr, k.qk);
                assert!(
                    (f64::from(got) - f64::from(want)).abs() <= 1e-5 * mag,
                    "{stem} row {r} at {level:?}: dot {got} vs llama.cpp {want} (magnitude {mag})"
                );
            }
        }
        // The byte-level API gives the same bytes and floats.
        let q = weightkit_quant::quantize(k.dtype, &x, COLS, Some(&imatrix)).unwrap();
        assert_eq!(q, want_q, "{stem} (api)");
        let mut y = vec![0f32; x.len()];
        weightkit_quant::dequantize(k.dtype, &q, &mut y).unwrap();
        assert!(
            y.iter()
                .zip(&want_deq)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{stem}"
        );
    }
}

#[test]
fn q1_0_matches_llama_cpp() {
    check_reference::<BlockQ1_0>(&Kernels {
        name: "q1_0",
        dtype: DType::Q1_0,
        qk: legacy::QK1_0,
        row: dispatch::quantize_row_q1_0_at,
        matrix: dispatch::quantize_q1_0_at,
        dequant: dispatch::dequantize_row_q1_0_at,
        dot: dispatch::vec_dot_q1_0_q8_0_at,
        dot_threshold: 0.40,
    });
}

#[test]
fn q2_0_matches_llama_cpp() {
    check_reference::<BlockQ2_0>(&Kernels {
        name: "q2_0",
        dtype: DType::Q2_0,
        qk: legacy::QK2_0,
        row: dispatch::quantize_row_q2_0_at,
        matrix: dispatch::quantize_q2_0_at,
        dequant: dispatch::dequantize_row_q2_0_at,
        dot: dispatch::vec_dot_q2_0_q8_0_at,
        dot_threshold: 0.15,
    });
}
