//! The examples' logic, run on the repository's testdata so the examples
//! cannot rot (`cargo test` also builds their `main`s).

// Each example is compiled here as a module; its `main` (and what only
// `main` uses) is dead code in this binary.
#[allow(dead_code)]
#[path = "../examples/dependencies.rs"]
mod dependencies;
#[allow(dead_code)]
#[path = "../examples/merge_lora.rs"]
mod merge_lora;
#[allow(dead_code)]
#[path = "../examples/quant_bench.rs"]
mod quant_bench;

use std::time::Duration;

use weightkit::DType;
use weightkit::quant::simd;

#[test]
fn merge_equals_peft_merged_reference() {
    // merged_reference.safetensors is PEFT 0.21.2's merge_and_unload of the
    // same adapter into the same base: an independent implementation.
    let lora = merge_lora::testdata().join("lora/basic");
    let diffs = merge_lora::merge_and_compare(
        &merge_lora::testdata().join("tiny-llama/safetensors-f32"),
        &lora,
        &lora.join("merged_reference.safetensors"),
    )
    .unwrap();
    let merged = diffs.iter().filter(|d| d.merged).count();
    assert!(merged > 0, "the adapter changed nothing");
    for d in &diffs {
        assert!(
            d.relative <= merge_lora::MAX_RELATIVE,
            "{}: max abs {:e}, relative {:e}",
            d.name,
            d.max_abs,
            d.relative
        );
        if !d.merged {
            // Copied tensors are the base's bytes, as in PEFT's output.
            assert_eq!(d.max_abs, 0.0, "{}", d.name);
        }
    }
}

#[test]
fn quant_bench_levels_agree() {
    // A few rows and no time budget: this checks the bench's logic (and the
    // kernels' agreement across levels), not speed.
    let detected = simd::level();
    for dtype in [DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K] {
        let r = quant_bench::bench_type(dtype, detected, 2, Duration::ZERO).unwrap();
        assert!(r.same_bytes, "{}", dtype.name());
        // The input has RMS ~1.4; 4 bits or more keep the error well below.
        assert!(r.rmse > 0.0 && r.rmse < 0.1, "{}: {}", dtype.name(), r.rmse);
        assert!(
            r.dot_relative < 1e-4,
            "{}: {}",
            dtype.name(),
            r.dot_relative
        );
        for t in [r.simd, r.scalar] {
            assert!(t.quantize > 0.0 && t.dequantize > 0.0 && t.vec_dot > 0.0);
        }
    }
    assert_eq!(simd::level(), detected, "the bench must restore the level");
}

#[test]
fn dependencies_quantizes_every_whole_block_matrix() {
    let path = merge_lora::testdata().join("tiny-llama/safetensors-f32/model.safetensors");
    let reports = dependencies::quantize_file(&path).unwrap();
    assert!(!reports.is_empty());
    let mut quantized = 0;
    for r in &reports {
        let whole_blocks = r.shape.rank() >= 2 && r.shape.row_len() % 32 == 0;
        assert_eq!(r.error.is_ok(), whole_blocks, "{} {}", r.name, r.shape);
        if let Ok((_, rel)) = r.error {
            // Q8_0: 8.5 bits per weight, 34 bytes per 32 f32 values.
            assert_eq!(r.bytes_out * 128, r.bytes_in * 34, "{}", r.name);
            assert!(rel < 0.01, "{}: relative RMSE {rel}", r.name);
            quantized += 1;
        } else {
            assert_eq!(r.bytes_out, r.bytes_in);
        }
    }
    // Every projection but down_proj (rows of 172) in the tiny Llama.
    assert_eq!(quantized, 14);
}
