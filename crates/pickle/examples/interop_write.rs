//! Writes `ours.pt` with `TorchWriter` and `expected.safetensors` with the
//! same tensors, for `cargo xtask interop` to load with real torch.
//!
//! Usage: `cargo run -p weightkit-pickle --example interop_write -- OUT_DIR`

use std::path::PathBuf;

use weightkit_core::{DType, Metadata, TensorInfo, TensorSink, TensorView};
use weightkit_pickle::TorchWriter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: interop_write OUT_DIR")?,
    );
    std::fs::create_dir_all(&out)?;
    let infos = vec![
        TensorInfo::new("model.embed_tokens.weight", DType::BF16, [32, 16]),
        TensorInfo::new("model.norm.weight", DType::F32, [16]),
        TensorInfo::new("lm_head.weight", DType::F16, [32, 16]),
        TensorInfo::new("scalar", DType::F64, Vec::<usize>::new()),
        TensorInfo::new("empty", DType::F32, [0, 3]),
        TensorInfo::new("ids", DType::I64, [2, 3, 4, 5]),
        TensorInfo::new("i32", DType::I32, [7]),
        TensorInfo::new("i16", DType::I16, [7]),
        TensorInfo::new("i8", DType::I8, [7]),
        TensorInfo::new("u8", DType::U8, [7]),
        TensorInfo::new("mask", DType::Bool, [9]),
    ];
    // Deterministic bytes that are valid values for every dtype.
    let data: Vec<Vec<u8>> = infos
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let n = t.byte_len().unwrap_or(0);
            (0..n)
                .map(|j| match t.dtype {
                    DType::Bool => ((i + j) % 2) as u8,
                    // Keep float exponents tame: low byte varies, high byte fixed.
                    DType::F16 | DType::BF16 if j % 2 == 1 => 0x3c,
                    DType::F32 if j % 4 == 3 => 0x3f,
                    DType::F64 if j % 8 == 7 => 0x3f,
                    _ => ((i * 37 + j * 11) % 251) as u8,
                })
                .collect()
        })
        .collect();
    let mut w = TorchWriter::create(out.join("ours.pt"), infos.clone())?;
    for (t, d) in infos.iter().zip(&data) {
        w.write_tensor(&t.name, d)?;
    }
    w.finish()?;
    let views: Vec<(&str, TensorView<'_>)> = infos
        .iter()
        .zip(&data)
        .map(|(t, d)| TensorView::new(t.dtype, &t.shape, d).map(|v| (t.name.as_str(), v)))
        .collect::<Result<_, _>>()?;
    weightkit_safetensors::write_file(out.join("expected.safetensors"), &views, &Metadata::new())?;
    println!("wrote {}", out.display());
    Ok(())
}
