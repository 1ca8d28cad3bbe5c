//! Prints each type's error on llama.cpp's test-quantize-fns input
//! (`0.1 + 2*cos(i + offset)`, 4096 values): RMSE and max |error| of
//! dequantize(quantize(x)) against x, and test-quantize-fns' own "total
//! error" (sqrt(sum sq)/n) and dot-product error, next to its thresholds.
//!
//! Usage: `cargo run --release -p weightkit-quant --example error_metrics`

use weightkit_core::DType;
use weightkit_quant::{dequantize, quantize, vec_dot, vec_dot_type};

fn main() -> Result<(), weightkit_quant::QuantError> {
    let n = 4096usize;
    let x: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    let y: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32 + 1.0).cos()).collect();
    println!("| type | RMSE | max abs err | total error (threshold) | dot error (threshold) |");
    println!("|---|---|---|---|---|");
    for dtype in [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::IQ4_NL,
        DType::IQ4_XS,
        DType::TQ1_0,
        DType::TQ2_0,
        DType::MXFP4,
        DType::NVFP4,
        DType::Q1_0,
        DType::Q2_0,
        DType::F16,
        DType::BF16,
    ] {
        let q = quantize(dtype, &x, n, None)?;
        let mut d = vec![0f32; n];
        dequantize(dtype, &q, &mut d)?;
        let sq: f64 = x
            .iter()
            .zip(&d)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let rmse = (sq / n as f64).sqrt();
        let max = x
            .iter()
            .zip(&d)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let total = sq.sqrt() / n as f64;
        let (tot_thr, dot_thr) = match dtype {
            // test-quantize-fns' ternary thresholds.
            DType::TQ1_0 | DType::TQ2_0 | DType::Q2_0 => (0.01, 0.15),
            // test-quantize-fns' binary thresholds.
            DType::Q1_0 => (0.025, 0.40),
            DType::Q2_K => (0.0075, 0.04),
            DType::Q3_K => (0.004, 0.04),
            DType::NVFP4 => (0.003, 0.03),
            _ => (0.002, 0.02),
        };
        let partner = vec_dot_type(dtype).unwrap_or(DType::Q8_0);
        let yq = quantize(partner, &y, n, None)?;
        let dot = vec_dot(dtype, &q, &yq)?;
        let exact: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let dot_err = (f64::from(dot) - exact).abs() / n as f64;
        println!(
            "| {} | {rmse:.5} | {max:.5} | {total:.6} ({tot_thr}) | {dot_err:.6} ({dot_thr}) |",
            dtype.name()
        );
    }
    Ok(())
}
