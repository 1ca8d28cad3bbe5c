//! Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q8_1 against llama.cpp's own bytes
//! (`testdata/ggml-reference/`), gguf-py's (`testdata/gguf/`), llama.cpp's
//! `test-quantize-fns` error thresholds, edge cases and properties.

use std::fmt::Debug;
use std::path::PathBuf;

use bytemuck::Zeroable;
use proptest::prelude::*;
use weightkit_quant::QuantError;
use weightkit_quant::legacy::*;

// ---------------------------------------------------------------------------
// Plumbing
// ---------------------------------------------------------------------------

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

fn read_bytes(rel: &str) -> Vec<u8> {
    let path = testdata(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s_from_le(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn read_f32(rel: &str) -> Vec<f32> {
    f32s_from_le(&read_bytes(rel))
}

/// Copies raw bytes into blocks (the `Vec<u8>` may not be aligned for `f16`).
fn blocks_from_bytes<B: bytemuck::Pod>(bytes: &[u8]) -> Vec<B> {
    let size = std::mem::size_of::<B>();
    assert_eq!(bytes.len() % size, 0, "not whole blocks");
    let mut out = vec![B::zeroed(); bytes.len() / size];
    bytemuck::cast_slice_mut::<B, u8>(&mut out).copy_from_slice(bytes);
    out
}

/// One legacy type, for the data-driven tests.
trait Legacy: bytemuck::Pod + PartialEq + Debug {
    /// ggml's lower-case name, as in the reference file names.
    const NAME: &'static str;
    fn quantize(
        src: &[f32],
        dst: &mut [Self],
        n_per_row: usize,
        imatrix: Option<&[f32]>,
    ) -> Result<(), QuantError>;
    fn quantize_ref(x: &[f32], y: &mut [Self]) -> Result<(), QuantError>;
    fn dequantize(x: &[Self], y: &mut [f32]) -> Result<(), QuantError>;
}

macro_rules! legacy {
    ($block:ty, $name:literal, $q:ident, $qref:ident, $deq:ident) => {
        impl Legacy for $block {
            const NAME: &'static str = $name;
            fn quantize(
                src: &[f32],
                dst: &mut [Self],
                n: usize,
                im: Option<&[f32]>,
            ) -> Result<(), QuantError> {
                $q(src, dst, n, im)
            }
            fn quantize_ref(x: &[f32], y: &mut [Self]) -> Result<(), QuantError> {
                $qref(x, y)
            }
            fn dequantize(x: &[Self], y: &mut [f32]) -> Result<(), QuantError> {
                $deq(x, y)
            }
        }
    };
}
legacy!(
    BlockQ4_0,
    "q4_0",
    quantize_q4_0,
    quantize_row_q4_0_ref,
    dequantize_row_q4_0
);
legacy!(
    BlockQ4_1,
    "q4_1",
    quantize_q4_1,
    quantize_row_q4_1_ref,
    dequantize_row_q4_1
);
legacy!(
    BlockQ5_0,
    "q5_0",
    quantize_q5_0,
    quantize_row_q5_0_ref,
    dequantize_row_q5_0
);
legacy!(
    BlockQ5_1,
    "q5_1",
    quantize_q5_1,
    quantize_row_q5_1_ref,
    dequantize_row_q5_1
);
legacy!(
    BlockQ8_0,
    "q8_0",
    quantize_q8_0,
    quantize_row_q8_0_ref,
    dequantize_row_q8_0
);

fn quantize_vec<B: Legacy>(src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>) -> Vec<B> {
    let mut q = vec![B::zeroed(); src.len() / 32];
    B::quantize(src, &mut q, n_per_row, imatrix).expect("quantize");
    q
}

fn dequantize_vec<B: Legacy>(q: &[B]) -> Vec<f32> {
    let mut y = vec![0.0f32; q.len() * 32];
    B::dequantize(q, &mut y).expect("dequantize");
    y
}

/// Index of the first differing block, with both blocks, for the message.
fn first_block_mismatch<B: Legacy>(got: &[B], want: &[B]) -> Option<String> {
    assert_eq!(got.len(), want.len(), "block counts");
    let i = got
        .iter()
        .zip(want)
        .position(|(a, b)| bytemuck::bytes_of(a) != bytemuck::bytes_of(b))?;
    let n = got
        .iter()
        .zip(want)
        .filter(|(a, b)| bytemuck::bytes_of(*a) != bytemuck::bytes_of(*b))
        .count();
    Some(format!(
        "{n} of {} blocks differ; first is block {i} (element {}):\n  ours: {:?}\n  want: {:?}",
        got.len(),
        i * 32,
        got[i],
        want[i]
    ))
}

/// Index of the first float whose bits differ.
fn first_bits_mismatch(got: &[f32], want: &[f32]) -> Option<String> {
    assert_eq!(got.len(), want.len(), "lengths");
    let i = got
        .iter()
        .zip(want)
        .position(|(a, b)| a.to_bits() != b.to_bits())?;
    let n = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    Some(format!(
        "{n} of {} values differ; first at {i}: ours {:e}, want {:e}",
        got.len(),
        got[i],
        want[i]
    ))
}

// ---------------------------------------------------------------------------
// The reference set's PRNG (testdata/ggml-reference/README.md), reimplemented
// from its text
// ---------------------------------------------------------------------------

const SEED: u64 = 42;
const ROWS: usize = 8;
const COLS: usize = 4096;
const DISTS: [&str; 4] = ["uniform", "gauss", "outlier", "edge"];

struct XorShift64Star(u64);

impl XorShift64Star {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn u24(&mut self) -> u64 {
        self.next_u64() >> 40
    }
    fn uniform(&mut self) -> f32 {
        (self.u24() as f32) * (1.0 / 8_388_608.0) - 1.0
    }
    fn gauss(&mut self) -> f32 {
        let s = self.u24() as i64 + self.u24() as i64 + self.u24() as i64 + self.u24() as i64
            - (1i64 << 25);
        let g = (s as f32) * (1.0 / 16_777_216.0);
        g * f32::from_bits(0x3F5D_B3D7)
    }
    fn outlier(&mut self) -> f32 {
        let x = self.gauss();
        let t = self.next_u64() >> 58;
        match t {
            0 => x * 64.0,
            1 => x * 8.0,
            _ => x,
        }
    }
    fn edge(&mut self, row: usize, j: usize) -> f32 {
        match row % 8 {
            0 => 0.0,
            1 => 0.5,
            2 => self.uniform() * (1.0 / 1_048_576.0),
            3 => self.uniform() * 1024.0,
            4 => {
                let mut v = 0.0;
                if j.is_multiple_of(37) {
                    v = 1.0;
                }
                if j.is_multiple_of(53) {
                    v = -2.0;
                }
                v
            }
            5 => {
                let m = 1.0 + ((j % 5) as f32) * 0.25;
                if j % 2 == 1 { -m } else { m }
            }
            6 => {
                let k = (self.u24() >> 20) as i32;
                ((k - 8) as f32) * 0.125
            }
            _ => -((self.u24() as f32) * (1.0 / 16_777_216.0)),
        }
    }
}

fn generate(dist: &str) -> Vec<f32> {
    let id = DISTS.iter().position(|d| *d == dist).expect("dist") as u64;
    let mut g = XorShift64Star(SEED + id);
    let mut x = Vec::with_capacity(ROWS * COLS);
    for i in 0..ROWS {
        for j in 0..COLS {
            x.push(match dist {
                "uniform" => g.uniform(),
                "gauss" => g.gauss(),
                "outlier" => g.outlier(),
                _ => g.edge(i, j),
            });
        }
    }
    x
}

fn imatrix() -> Vec<f32> {
    (0..COLS).map(|j| (1 + (j % 7)) as f32).collect()
}

#[test]
fn prng_spec_regenerates_the_inputs() {
    for dist in DISTS {
        let ours = generate(dist);
        let file = read_f32(&format!("ggml-reference/{dist}.f32"));
        if let Some(msg) = first_bits_mismatch(&ours, &file) {
            panic!("{dist}: {msg}");
        }
    }
    let file = read_f32("ggml-reference/imatrix.f32");
    assert!(first_bits_mismatch(&imatrix(), &file).is_none(), "imatrix");
}

// ---------------------------------------------------------------------------
// Bit-exactness with llama.cpp
// ---------------------------------------------------------------------------

/// Quantizes every distribution (with and without the imatrix) and compares
/// with llama.cpp's bytes; dequantizes llama.cpp's bytes and compares with its
/// floats. Returns the number of files checked.
fn check_against_ggml<B: Legacy>(with_imatrix: bool) -> usize {
    let im = imatrix();
    let mut failures = Vec::new();
    let mut checked = 0;
    for dist in DISTS {
        let x = read_f32(&format!("ggml-reference/{dist}.f32"));
        let suffix = if with_imatrix { "_imatrix" } else { "" };
        let stem = format!("ggml-reference/{dist}_{}{suffix}", B::NAME);
        let want: Vec<B> = blocks_from_bytes(&read_bytes(&format!("{stem}.q")));

        let got = quantize_vec::<B>(&x, COLS, with_imatrix.then_some(&im[..]));
        if let Some(msg) = first_block_mismatch(&got, &want) {
            failures.push(format!("{stem}.q: {msg}"));
        }
        if !with_imatrix {
            // The one-row reference entry point over the whole chunk, too.
            let mut whole = vec![B::zeroed(); x.len() / 32];
            B::quantize_ref(&x, &mut whole).expect("quantize_ref");
            if let Some(msg) = first_block_mismatch(&whole, &want) {
                failures.push(format!("{stem}.q via quantize_row_*_ref: {msg}"));
            }
        }

        let deq = dequantize_vec(&want);
        let want_deq = read_f32(&format!("{stem}.deq.f32"));
        if let Some(msg) = first_bits_mismatch(&deq, &want_deq) {
            failures.push(format!("{stem}.deq.f32: {msg}"));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    checked
}

#[test]
fn q4_0_matches_llama_cpp() {
    assert_eq!(check_against_ggml::<BlockQ4_0>(false), 4);
}

#[test]
fn q4_0_imatrix_matches_llama_cpp() {
    assert_eq!(check_against_ggml::<BlockQ4_0>(true), 4);
}

#[test]
fn q4_1_matches_llama_cpp() {
    assert_eq!(check_against_ggml::<BlockQ4_1>(false), 4);
}

#[test]
fn q4_1_imatrix_matches_llama_cpp() {
    assert_eq!(check_against_ggml::<BlockQ4_1>(true), 4);
}

#[test]
fn q5_0_matches_llama_cpp() {
    assert_eq!(check_against_ggml::<BlockQ5_0>(false), 4);
}

#[test]
fn q5_0_imatrix_matches_llama_cpp() {
    assert_eq!(check_against_ggml::<BlockQ5_0>(true), 4);
}

#[test]
fn q5_1_matches_llama_cpp() {
    assert_eq!(check_against_ggml::<BlockQ5_1>(false), 4);
}

#[test]
fn q5_1_imatrix_matches_llama_cpp() {
    assert_eq!(check_against_ggml::<BlockQ5_1>(true), 4);
}

#[test]
fn q8_0_matches_llama_cpp() {
    assert_eq!(check_against_ggml::<BlockQ8_0>(false), 4);
}

#[test]
fn q8_0_ignores_the_imatrix_as_ggml_does() {
    let x = read_f32("ggml-reference/gauss.f32");
    let im = imatrix();
    let with: Vec<BlockQ8_0> = quantize_vec(&x, COLS, Some(&im));
    let without: Vec<BlockQ8_0> = quantize_vec(&x, COLS, None);
    assert_eq!(with, without);
}

// ---------------------------------------------------------------------------
// gguf-py 0.19 fixtures
// ---------------------------------------------------------------------------

fn gguf_case<B: Legacy>(tensor: &str) {
    let gguf = weightkit_gguf::GgufFile::read(testdata("gguf/quantized.gguf")).expect("gguf");
    let source =
        weightkit_safetensors::SafetensorsFile::read(testdata("gguf/quantized.source.safetensors"))
            .expect("src");
    let dequant = weightkit_safetensors::SafetensorsFile::read(testdata(
        "gguf/quantized.dequant.safetensors",
    ))
    .expect("deq");

    let want: Vec<B> = blocks_from_bytes(gguf.tensor(tensor).expect("tensor").data());
    let x = source
        .tensor(tensor)
        .expect("source tensor")
        .to_f32_vec()
        .expect("f32");
    assert_eq!(x.len(), want.len() * 32);

    // gguf-py quantizes the whole tensor row by row with its numpy port of the
    // reference quantizer; rows here are 256 wide.
    let mut got = vec![B::zeroed(); want.len()];
    B::quantize_ref(&x, &mut got).expect("quantize");
    if let Some(msg) = first_block_mismatch(&got, &want) {
        panic!("{tensor}: ours vs gguf-py: {msg}");
    }

    let deq = dequantize_vec(&want);
    let want_deq = dequant
        .tensor(tensor)
        .expect("dequant tensor")
        .to_f32_vec()
        .expect("f32");
    if let Some(msg) = first_bits_mismatch(&deq, &want_deq) {
        panic!("{tensor}: dequantized vs gguf-py: {msg}");
    }
}

#[test]
fn gguf_py_q4_0() {
    gguf_case::<BlockQ4_0>("q.Q4_0");
}

#[test]
fn gguf_py_q4_1() {
    gguf_case::<BlockQ4_1>("q.Q4_1");
}

#[test]
fn gguf_py_q5_0() {
    gguf_case::<BlockQ5_0>("q.Q5_0");
}

#[test]
fn gguf_py_q5_1() {
    gguf_case::<BlockQ5_1>("q.Q5_1");
}

#[test]
fn gguf_py_q8_0() {
    gguf_case::<BlockQ8_0>("q.Q8_0");
}

#[test]
fn gguf_py_q8_0_3d() {
    gguf_case::<BlockQ8_0>("q.Q8_0.3d");
}

// ---------------------------------------------------------------------------
// llama.cpp tests/test-quantize-fns.cpp
// ---------------------------------------------------------------------------

const TEST_SIZE: usize = 32 * 128;
const MAX_QUANTIZATION_TOTAL_ERROR: f32 = 0.002;
const MAX_DOT_PRODUCT_ERROR: f32 = 0.02;

/// `generate_data`: `dst[i] = 0.1 + amplitude*cosf(i + offset)` (double sum,
/// stored as float).
fn generate_data(offset: f32, amplitude: f32) -> Vec<f32> {
    (0..TEST_SIZE)
        .map(|i| (0.1f64 + (amplitude * ((i as f32) + offset).cos()) as f64) as f32)
        .collect()
}

/// `array_rmse`: `sqrtf(sum of squared differences in double) / n`.
fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        let diff = (x - y) as f64;
        sum += diff * diff;
    }
    (sum as f32).sqrt() / a.len() as f32
}

/// `dot_product`: float products summed in double.
fn dot_product(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        sum += (x * y) as f64;
    }
    sum as f32
}

fn total_error<B: Legacy>(data: &[f32]) -> f32 {
    let mut q = vec![B::zeroed(); data.len() / 32];
    B::quantize_ref(data, &mut q).expect("quantize");
    array_rmse(data, &dequantize_vec(&q))
}

#[test]
fn total_quantization_error_below_llama_cpp_threshold() {
    let data = generate_data(0.0, 2.0);
    let errors = [
        ("q4_0", total_error::<BlockQ4_0>(&data)),
        ("q4_1", total_error::<BlockQ4_1>(&data)),
        ("q5_0", total_error::<BlockQ5_0>(&data)),
        ("q5_1", total_error::<BlockQ5_1>(&data)),
        ("q8_0", total_error::<BlockQ8_0>(&data)),
    ];
    for (name, err) in errors {
        assert!(
            err < MAX_QUANTIZATION_TOTAL_ERROR,
            "{name}: total error {err}"
        );
    }
}

#[test]
fn vec_dot_error_below_llama_cpp_threshold() {
    let a = generate_data(0.0, 2.0);
    let b = generate_data(1.0, 2.0);
    let dot_ref = dot_product(&a, &b);
    let n = TEST_SIZE as f32;

    let mut b8_0 = vec![BlockQ8_0::zeroed(); TEST_SIZE / 32];
    quantize_row_q8_0_ref(&b, &mut b8_0).expect("q8_0");
    let mut b8_1 = vec![BlockQ8_1::zeroed(); TEST_SIZE / 32];
    quantize_row_q8_1_ref(&b, &mut b8_1).expect("q8_1");

    let mut a4_0 = vec![BlockQ4_0::zeroed(); TEST_SIZE / 32];
    quantize_row_q4_0_ref(&a, &mut a4_0).expect("q4_0");
    let mut a4_1 = vec![BlockQ4_1::zeroed(); TEST_SIZE / 32];
    quantize_row_q4_1_ref(&a, &mut a4_1).expect("q4_1");
    let mut a5_0 = vec![BlockQ5_0::zeroed(); TEST_SIZE / 32];
    quantize_row_q5_0_ref(&a, &mut a5_0).expect("q5_0");
    let mut a5_1 = vec![BlockQ5_1::zeroed(); TEST_SIZE / 32];
    quantize_row_q5_1_ref(&a, &mut a5_1).expect("q5_1");
    let mut a8_0 = vec![BlockQ8_0::zeroed(); TEST_SIZE / 32];
    quantize_row_q8_0_ref(&a, &mut a8_0).expect("q8_0");

    let results = [
        ("q4_0", vec_dot_q4_0_q8_0(&a4_0, &b8_0).expect("dot")),
        ("q4_1", vec_dot_q4_1_q8_1(&a4_1, &b8_1).expect("dot")),
        ("q5_0", vec_dot_q5_0_q8_0(&a5_0, &b8_0).expect("dot")),
        ("q5_1", vec_dot_q5_1_q8_1(&a5_1, &b8_1).expect("dot")),
        ("q8_0", vec_dot_q8_0_q8_0(&a8_0, &b8_0).expect("dot")),
    ];
    for (name, dot) in results {
        let err = (dot - dot_ref).abs() / n;
        assert!(
            err < MAX_DOT_PRODUCT_ERROR,
            "{name}: dot {dot} vs {dot_ref}, error {err}"
        );
    }
}

/// The dot products in ggml's order equal a direct evaluation of the same
/// formula, block by block (catches unpacking mistakes in the kernels).
#[test]
fn vec_dot_equals_the_dequantized_formula() {
    let a = generate_data(0.5, 1.5);
    let b = generate_data(2.0, 1.0);
    let nb = TEST_SIZE / 32;
    let mut b8_0 = vec![BlockQ8_0::zeroed(); nb];
    quantize_row_q8_0_ref(&b, &mut b8_0).expect("q8_0");
    let mut b8_1 = vec![BlockQ8_1::zeroed(); nb];
    quantize_row_q8_1_ref(&b, &mut b8_1).expect("q8_1");
    let q8: Vec<[i32; 32]> = b8_0.iter().map(|b| b.qs.map(i32::from)).collect();
    assert!(
        b8_0.iter()
            .zip(&b8_1)
            .all(|(x, y)| x.qs == y.qs && x.d == y.d)
    );

    // Integer level of each element from the dequantized value: v = l*d (+ m).
    fn levels(deq: &[f32], d: &[f32], m: &[f32]) -> Vec<i32> {
        deq.iter()
            .enumerate()
            .map(|(i, &v)| ((v - m[i / 32]) / d[i / 32]).round() as i32)
            .collect()
    }

    let mut a4_0 = vec![BlockQ4_0::zeroed(); nb];
    quantize_row_q4_0_ref(&a, &mut a4_0).expect("q4_0");
    let d: Vec<f32> = a4_0.iter().map(|b| b.d.to_f32()).collect();
    let l = levels(&dequantize_vec(&a4_0), &d, &vec![0.0; nb]);
    let mut want = 0.0f32;
    for ib in 0..nb {
        let sumi: i32 = (0..32).map(|j| l[ib * 32 + j] * q8[ib][j]).sum();
        want += sumi as f32 * d[ib] * b8_0[ib].d.to_f32();
    }
    assert_eq!(
        vec_dot_q4_0_q8_0(&a4_0, &b8_0).expect("dot").to_bits(),
        want.to_bits()
    );

    let mut a5_0 = vec![BlockQ5_0::zeroed(); nb];
    quantize_row_q5_0_ref(&a, &mut a5_0).expect("q5_0");
    let d: Vec<f32> = a5_0.iter().map(|b| b.d.to_f32()).collect();
    let l = levels(&dequantize_vec(&a5_0), &d, &vec![0.0; nb]);
    let mut want = 0.0f32;
    for ib in 0..nb {
        let sumi: i32 = (0..32).map(|j| l[ib * 32 + j] * q8[ib][j]).sum();
        want += (d[ib] * b8_0[ib].d.to_f32()) * sumi as f32;
    }
    assert_eq!(
        vec_dot_q5_0_q8_0(&a5_0, &b8_0).expect("dot").to_bits(),
        want.to_bits()
    );

    let mut a5_1 = vec![BlockQ5_1::zeroed(); nb];
    quantize_row_q5_1_ref(&a, &mut a5_1).expect("q5_1");
    let d: Vec<f32> = a5_1.iter().map(|b| b.d.to_f32()).collect();
    let m: Vec<f32> = a5_1.iter().map(|b| b.m.to_f32()).collect();
    let l = levels(&dequantize_vec(&a5_1), &d, &m);
    let mut want = 0.0f32;
    for ib in 0..nb {
        let sumi: i32 = (0..32).map(|j| l[ib * 32 + j] * q8[ib][j]).sum();
        want += (d[ib] * b8_1[ib].d.to_f32()) * sumi as f32 + m[ib] * b8_1[ib].s.to_f32();
    }
    assert_eq!(
        vec_dot_q5_1_q8_1(&a5_1, &b8_1).expect("dot").to_bits(),
        want.to_bits()
    );

    let mut a4_1 = vec![BlockQ4_1::zeroed(); nb];
    quantize_row_q4_1_ref(&a, &mut a4_1).expect("q4_1");
    let d: Vec<f32> = a4_1.iter().map(|b| b.d.to_f32()).collect();
    let m: Vec<f32> = a4_1.iter().map(|b| b.m.to_f32()).collect();
    let l = levels(&dequantize_vec(&a4_1), &d, &m);
    let mut want = 0.0f32;
    for ib in 0..nb {
        let sumi: i32 = (0..32).map(|j| l[ib * 32 + j] * q8[ib][j]).sum();
        want += (d[ib] * b8_1[ib].d.to_f32()) * sumi as f32 + m[ib] * b8_1[ib].s.to_f32();
    }
    assert_eq!(
        vec_dot_q4_1_q8_1(&a4_1, &b8_1).expect("dot").to_bits(),
        want.to_bits()
    );

    let mut want = 0.0f32;
    for ib in 0..nb {
        let sumi: i32 = (0..32).map(|j| q8[ib][j] * q8[ib][j]).sum();
        want += sumi as f32 * (b8_0[ib].d.to_f32() * b8_0[ib].d.to_f32());
    }
    assert_eq!(
        vec_dot_q8_0_q8_0(&b8_0, &b8_0).expect("dot").to_bits(),
        want.to_bits()
    );
}

#[test]
fn q8_1_sum_is_d_times_the_sum_of_quants() {
    let x = generate_data(3.0, 1.0);
    let mut y = vec![BlockQ8_1::zeroed(); x.len() / 32];
    quantize_row_q8_1_ref(&x, &mut y).expect("q8_1");
    let mut y0 = vec![BlockQ8_0::zeroed(); x.len() / 32];
    quantize_row_q8_0_ref(&x, &mut y0).expect("q8_0");
    for (b, b0) in y.iter().zip(&y0) {
        assert_eq!((b.d, b.qs), (b0.d, b0.qs));
        let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
        // s is rounded from the unrounded f32 scale: compare through f16.
        assert!(
            (b.s.to_f32() - sum as f32 * b.d.to_f32()).abs()
                <= (sum.abs() as f32) * b.d.to_f32() * 2e-3 + 1e-7
        );
    }
}

// ---------------------------------------------------------------------------
// Edge cases
// ---------------------------------------------------------------------------

fn roundtrip_all(x: &[f32], imatrix: Option<&[f32]>) -> Vec<(&'static str, Vec<f32>)> {
    fn one<B: Legacy>(x: &[f32], im: Option<&[f32]>) -> (&'static str, Vec<f32>) {
        (B::NAME, dequantize_vec(&quantize_vec::<B>(x, x.len(), im)))
    }
    vec![
        one::<BlockQ4_0>(x, imatrix),
        one::<BlockQ4_1>(x, imatrix),
        one::<BlockQ5_0>(x, imatrix),
        one::<BlockQ5_1>(x, imatrix),
        one::<BlockQ8_0>(x, imatrix),
    ]
}

#[test]
fn all_zeros_roundtrip_to_zeros() {
    let x = vec![0.0f32; 128];
    let w = vec![1.0f32; 128];
    for im in [None, Some(&w[..])] {
        for (name, y) in roundtrip_all(&x, im) {
            assert!(y.iter().all(|v| *v == 0.0), "{name} {im:?}: {y:?}");
        }
    }
    let mut q = vec![BlockQ8_1::zeroed(); 4];
    quantize_row_q8_1_ref(&x, &mut q).expect("q8_1");
    assert!(
        q.iter()
            .all(|b| b.d.to_f32() == 0.0 && b.s.to_f32() == 0.0 && b.qs == [0; 32])
    );
}

#[test]
fn edge_inputs_give_finite_dequantized_values() {
    let mut cases: Vec<(&str, Vec<f32>)> = Vec::new();
    let mut outlier = vec![0.01f32; 64];
    outlier[37] = 30_000.0;
    cases.push(("single huge outlier", outlier));
    let mut neg_outlier = vec![0.5f32; 64];
    neg_outlier[3] = -60_000.0;
    cases.push(("single huge negative outlier", neg_outlier));
    cases.push((
        "subnormals",
        (0..64)
            .map(|i| f32::from_bits(1 + i * 12_345) * if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect(),
    ));
    cases.push((
        "smallest subnormal",
        (0..64)
            .map(|i| if i == 5 { f32::from_bits(1) } else { 0.0 })
            .collect(),
    ));
    cases.push((
        "tiny normals",
        (0..64)
            .map(|i| f32::MIN_POSITIVE * (i as f32 - 31.5))
            .collect(),
    ));
    cases.push((
        "80% of f16 max",
        (0..64)
            .map(|i| 0.8 * 65_504.0 * ((i % 9) as f32 - 4.0) / 4.0)
            .collect(),
    ));
    cases.push(("constant", vec![3.25f32; 64]));
    cases.push(("constant negative", vec![-7.0f32; 64]));
    let w: Vec<f32> = (0..64).map(|j| (j % 3) as f32).collect();
    for (what, x) in &cases {
        for im in [None, Some(&w[..])] {
            for (name, y) in roundtrip_all(x, im) {
                assert!(
                    y.iter().all(|v| v.is_finite()),
                    "{what} / {name} / imatrix {}: {y:?}",
                    im.is_some()
                );
            }
        }
    }

    // At the f16 limit itself the reference paths stay finite...
    let at_max: Vec<f32> = (0..64)
        .map(|i| 65_504.0 * ((i % 9) as f32 - 4.0) / 4.0)
        .collect();
    let both_signs: Vec<f32> = (0..64)
        .map(|i| if i % 2 == 0 { 65_504.0 } else { -65_504.0 })
        .collect();
    for x in [&at_max, &both_signs] {
        for (name, y) in roundtrip_all(x, None) {
            assert!(y.iter().all(|v| v.is_finite()), "{name} at f16 max: {y:?}");
        }
    }
    // ...but ggml's importance-weighted Q4_1/Q5_1 search (make_qkx3_quants)
    // fits an offset below the block minimum, which then rounds to -inf in
    // f16: llama.cpp writes the same block, so this pins that behaviour.
    let mut q = vec![BlockQ4_1::zeroed(); 2];
    quantize_q4_1(&at_max, &mut q, 64, Some(&w)).expect("q4_1");
    assert!(
        q.iter()
            .all(|b| b.m.to_f32() == f32::NEG_INFINITY && b.d.to_f32().is_finite()),
        "{q:?}"
    );
}

#[test]
fn extreme_finite_inputs_do_not_panic() {
    let cases: Vec<Vec<f32>> = vec![
        (0..64)
            .map(|i| if i % 2 == 0 { f32::MAX } else { -f32::MAX })
            .collect(),
        (0..64).map(|i| f32::MAX / (i + 1) as f32).collect(),
        (0..64).map(|i| 1e30 * (i as f32 - 20.0)).collect(),
        (0..64).map(|i| if i == 0 { 1e-40 } else { 0.0 }).collect(),
    ];
    let w = vec![f32::MAX; 64];
    let w0 = vec![0.0f32; 64];
    for x in &cases {
        for im in [None, Some(&w[..]), Some(&w0[..])] {
            let _ = roundtrip_all(x, im);
        }
        let mut q = vec![BlockQ8_1::zeroed(); 2];
        quantize_row_q8_1_ref(x, &mut q).expect("q8_1");
    }
}

#[test]
fn errors_instead_of_panics() {
    let x = vec![1.0f32; 64];
    let mut y = vec![BlockQ4_0::zeroed(); 2];

    assert!(matches!(
        quantize_row_q4_0_ref(&x[..33], &mut y),
        Err(QuantError::RowNotBlockMultiple {
            n: 33,
            block: 32,
            ..
        })
    ));
    assert!(matches!(
        quantize_row_q4_0_ref(&x, &mut y[..1]),
        Err(QuantError::BufferLength {
            expected: 2,
            found: 1,
            ..
        })
    ));
    let mut bad = x.clone();
    bad[40] = f32::NAN;
    assert!(matches!(
        quantize_row_q4_0_ref(&bad, &mut y),
        Err(QuantError::NonFiniteInput { index: 40, .. })
    ));
    bad[40] = f32::NEG_INFINITY;
    assert!(matches!(
        quantize_q5_1(&bad, &mut [BlockQ5_1::zeroed(); 2], 64, None),
        Err(QuantError::NonFiniteInput { index: 40, .. })
    ));

    assert!(matches!(
        quantize_q4_0(&x, &mut y, 48, None),
        Err(QuantError::RowNotBlockMultiple { n: 48, .. })
    ));
    assert!(matches!(
        quantize_q4_0(&x[..32], &mut y, 64, None),
        Err(QuantError::BufferLength { found: 32, .. })
    ));
    assert!(matches!(
        quantize_q4_0(&x, &mut y, 32, Some(&x)),
        Err(QuantError::BufferLength {
            expected: 32,
            found: 64,
            ..
        })
    ));
    let mut w = vec![1.0f32; 32];
    w[7] = -1.0;
    assert!(matches!(
        quantize_q4_1(&x, &mut [BlockQ4_1::zeroed(); 2], 32, Some(&w)),
        Err(QuantError::InvalidImportance { index: 7, .. })
    ));
    w[7] = f32::NAN;
    assert!(matches!(
        quantize_q8_0(&x, &mut [BlockQ8_0::zeroed(); 2], 32, Some(&w)),
        Err(QuantError::InvalidImportance { index: 7, .. })
    ));
    // An empty input is fine, whatever n_per_row.
    assert!(quantize_q5_0(&[], &mut [], 0, None).is_ok());
    assert!(quantize_q5_0(&[], &mut [], 0, Some(&[])).is_ok());
    assert!(quantize_q5_0(&[], &mut [], 64, None).is_ok());
    assert!(matches!(
        quantize_q5_0(&x, &mut [BlockQ5_0::zeroed(); 2], 0, None),
        Err(QuantError::BufferLength { .. })
    ));

    let mut out = vec![0.0f32; 63];
    assert!(matches!(
        dequantize_row_q4_0(&y, &mut out),
        Err(QuantError::BufferLength {
            expected: 64,
            found: 63,
            ..
        })
    ));
    assert!(matches!(
        vec_dot_q8_0_q8_0(&[BlockQ8_0::zeroed(); 2], &[BlockQ8_0::zeroed(); 3]),
        Err(QuantError::BufferLength {
            expected: 2,
            found: 3,
            ..
        })
    ));
    // Nothing was written by the failed calls.
    assert_eq!(y, vec![BlockQ4_0::zeroed(); 2]);
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

/// Blocks of moderate values (so that the f16 scale stays finite), with a
/// per-case magnitude spanning many binades.
fn moderate_blocks() -> impl Strategy<Value = Vec<f32>> {
    (1usize..=4, -30i32..=14).prop_flat_map(|(nb, exp)| {
        let scale = 2f32.powi(exp);
        prop::collection::vec(-1.0f32..1.0, nb * 32)
            .prop_map(move |v| v.into_iter().map(|x| x * scale).collect())
    })
}

/// Any finite f32, mixed with zeros and subnormals.
fn any_finite() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => prop::num::f32::NORMAL,
        1 => prop::num::f32::SUBNORMAL,
        1 => prop::num::f32::ZERO,
        2 => -100.0f32..100.0,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Q8_0: every element within half a step of the f32 scale, plus the f16
    /// rounding of the scale times the level.
    #[test]
    fn q8_0_error_bounded_by_half_a_step(x in moderate_blocks()) {
        let mut q = vec![BlockQ8_0::zeroed(); x.len() / 32];
        quantize_row_q8_0_ref(&x, &mut q).unwrap();
        let y = dequantize_vec(&q);
        for (ib, b) in q.iter().enumerate() {
            let xb = &x[ib * 32..][..32];
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let d16 = b.d.to_f32();
            for j in 0..32 {
                let err = (xb[j] - y[ib * 32 + j]).abs();
                let bound = d * 0.5 * (1.0 + 1e-5) + 127.0 * (d - d16).abs() + amax * 1e-6 + 1e-38;
                prop_assert!(err <= bound, "block {ib} elem {j}: x {} y {} d {d} d16 {d16}", xb[j], y[ib * 32 + j]);
            }
        }
    }

    /// Q4_0: within half a step, except the one clamped level (q = 15) on the
    /// opposite side of the extreme value, which is within one step.
    #[test]
    fn q4_0_error_bounded_by_the_step(x in moderate_blocks()) {
        let mut q = vec![BlockQ4_0::zeroed(); x.len() / 32];
        quantize_row_q4_0_ref(&x, &mut q).unwrap();
        let y = dequantize_vec(&q);
        for (ib, b) in q.iter().enumerate() {
            let xb = &x[ib * 32..][..32];
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 8.0;
            let d16 = b.d.to_f32().abs();
            for j in 0..32 {
                let level = if j < 16 { b.qs[j] & 0x0F } else { b.qs[j - 16] >> 4 };
                let steps = if level == 15 { 1.0 } else { 0.5 };
                let err = (xb[j] - y[ib * 32 + j]).abs();
                let bound = d * steps * (1.0 + 1e-5) + 8.0 * (d - d16).abs() + amax * 1e-6 + 1e-38;
                prop_assert!(err <= bound, "block {ib} elem {j}: x {} y {} d {d} d16 {d16}", xb[j], y[ib * 32 + j]);
            }
        }
    }

    /// Q4_1/Q5_1: within half a step of the range (plus f16 rounding of d and m).
    #[test]
    fn q4_1_q5_1_error_bounded_by_half_a_step(x in moderate_blocks()) {
        let mut q4 = vec![BlockQ4_1::zeroed(); x.len() / 32];
        quantize_row_q4_1_ref(&x, &mut q4).unwrap();
        let mut q5 = vec![BlockQ5_1::zeroed(); x.len() / 32];
        quantize_row_q5_1_ref(&x, &mut q5).unwrap();
        let y4 = dequantize_vec(&q4);
        let y5 = dequantize_vec(&q5);
        for ib in 0..x.len() / 32 {
            let xb = &x[ib * 32..][..32];
            let min = xb.iter().fold(f32::MAX, |m, v| m.min(*v));
            let max = xb.iter().fold(-f32::MAX, |m, v| m.max(*v));
            let amax = max.abs().max(min.abs());
            for (nmax, d16, m16, y) in [
                (15.0f32, q4[ib].d.to_f32(), q4[ib].m.to_f32(), &y4),
                (31.0, q5[ib].d.to_f32(), q5[ib].m.to_f32(), &y5),
            ] {
                let d = (max - min) / nmax;
                for j in 0..32 {
                    let err = (xb[j] - y[ib * 32 + j]).abs();
                    let bound = d * 0.5 * (1.0 + 1e-5) + nmax * (d - d16).abs() + (min - m16).abs() + amax * 1e-6 + 1e-38;
                    prop_assert!(err <= bound, "nmax {nmax} block {ib} elem {j}: x {} y {}", xb[j], y[ib * 32 + j]);
                }
            }
        }
    }

    /// Q5_0 as Q4_0 with 32 levels.
    #[test]
    fn q5_0_error_bounded_by_the_step(x in moderate_blocks()) {
        let mut q = vec![BlockQ5_0::zeroed(); x.len() / 32];
        quantize_row_q5_0_ref(&x, &mut q).unwrap();
        let y = dequantize_vec(&q);
        for ib in 0..q.len() {
            let xb = &x[ib * 32..][..32];
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 16.0;
            let d16 = q[ib].d.to_f32().abs();
            for j in 0..32 {
                let err = (xb[j] - y[ib * 32 + j]).abs();
                let bound = d * (1.0 + 1e-5) + 16.0 * (d - d16).abs() + amax * 1e-6 + 1e-38;
                prop_assert!(err <= bound);
            }
        }
    }

    /// The importance-weighted paths stay within a few steps of the input
    /// (their scale search may trade one element's error for others').
    #[test]
    fn imatrix_paths_stay_close(x in moderate_blocks(), wseed in 0u32..1000) {
        let n = x.len();
        let w: Vec<f32> = (0..n).map(|j| ((j as u32).wrapping_mul(2_654_435_761).wrapping_add(wseed) % 17) as f32 * 0.25 + 0.01).collect();
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (name, y) in roundtrip_all(&x, Some(&w)) {
            prop_assert!(y.iter().all(|v| v.is_finite()), "{name}");
            for (a, b) in x.iter().zip(&y) {
                // 4e-6: a level up to 127 times the f16 rounding of a
                // subnormal scale (2^-25), plus that of the offset.
                prop_assert!((a - b).abs() <= amax * 0.75 + 4e-6, "{name}: {a} vs {b}");
            }
        }
    }

    /// No panic (and finite-or-not output, never a crash) on any finite input,
    /// with or without importance weights.
    #[test]
    fn never_panics_on_finite_input(
        x in prop::collection::vec(any_finite(), 32..=96),
        w in prop::collection::vec(prop_oneof![Just(0.0f32), 0.0f32..1e6, prop::num::f32::POSITIVE], 96),
    ) {
        let n = x.len() / 32 * 32;
        let x = &x[..n];
        let w = &w[..n];
        let _ = roundtrip_all(x, None);
        let _ = roundtrip_all(x, Some(w));
        let mut q = vec![BlockQ8_1::zeroed(); n / 32];
        prop_assert!(quantize_row_q8_1_ref(x, &mut q).is_ok());
        let mut q8 = vec![BlockQ8_0::zeroed(); n / 32];
        quantize_row_q8_0_ref(x, &mut q8).unwrap();
        let _ = vec_dot_q8_0_q8_0(&q8, &q8).unwrap();
    }

    /// Dequantizing arbitrary bytes never panics.
    #[test]
    fn dequantize_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..=4 * 36)) {
        fn go<B: Legacy>(bytes: &[u8]) {
            let n = bytes.len() / std::mem::size_of::<B>() * std::mem::size_of::<B>();
            let blocks: Vec<B> = blocks_from_bytes(&bytes[..n]);
            let _ = dequantize_vec(&blocks);
        }
        go::<BlockQ4_0>(&bytes);
        go::<BlockQ4_1>(&bytes);
        go::<BlockQ5_0>(&bytes);
        go::<BlockQ5_1>(&bytes);
        go::<BlockQ8_0>(&bytes);
    }
}
