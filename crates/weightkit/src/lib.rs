//! # weightkit
//!
//! Everything people do to neural-network weights, as one dependency: read
//! and write safetensors, PyTorch and GGUF files, initialise tensors as
//! `torch.nn.init` does, merge PEFT LoRA adapters, and quantize to ggml's
//! block types bit for bit with llama.cpp.
//!
//! This crate holds no code of its own. It re-exports the `weightkit-*`
//! libraries as modules, plus the handful of items most programs touch at
//! its root, so `weightkit = ...` in `Cargo.toml` is all a program needs.
//! Depend on the individual crates instead when a smaller build matters
//! (see [Which crate do I depend on](#which-crate-do-i-depend-on)).
//!
//! ## Modules
//!
//! | module | crate | what it is for |
//! |---|---|---|
//! | [`core`] | `weightkit-core` | the vocabulary: [`DType`] (every safetensors dtype and ggml type), [`Shape`], borrowed and owned tensors, f16/bf16 conversion, [`Metadata`], the streaming [`TensorSource`] / [`TensorSink`] traits every format implements |
//! | [`safetensors`] | `weightkit-safetensors` | zero-copy safetensors reading (one file or Hugging Face shards), streaming atomic writers |
//! | [`gguf`] | `weightkit-gguf` | GGUF v2/v3 reading with llama.cpp's validation, a streaming writer byte-identical to gguf-py |
//! | [`pickle`] | `weightkit-pickle` | PyTorch checkpoints (`.bin`, `.pt`) through a pickle VM that never executes code; a writer byte-identical to `torch.save` |
//! | [`quant`] | `weightkit-quant` | every ggml block type (Q4_0 .. Q8_0, the k-quants, IQ types): quantize, dequantize, `vec_dot`, `matvec`, bit-exact with llama.cpp, SIMD chosen at run time |
//! | [`init`] | `weightkit-init` | `torch.nn.init` (Kaiming, Xavier, orthogonal, ...), LoRA inits; reproducible across thread counts, or bit for bit with torch's generator |
//! | [`io`] | `weightkit-io` | [`open`] any checkpoint as one [`Source`]; streaming conversion (Hugging Face <-> GGUF as `convert_hf_to_gguf.py`), llama-quantize's mixtures and importance matrices |
//! | [`lora`] | `weightkit-lora` | PEFT adapters: load, save, [`merge_lora`] / [`merge_into`] equal to PEFT's merge, [`lora::export()`] (base + adapters -> quantized GGUF in one streaming pass, what `weightkit export` runs), combinations, extraction, llama.cpp GGUF adapters |
//!
//! At the root: [`DType`], [`Shape`], [`Tensor`], [`TensorInfo`],
//! [`TensorView`], [`Metadata`], [`TensorSource`], [`TensorSink`] (core);
//! [`open`], [`Model`], [`Source`], [`Format`] (io); [`quantize`],
//! [`dequantize`] (quant); [`Init`], [`Rng`] (init); [`Adapter`],
//! [`MergeOptions`], [`merge_lora`], [`merge_into`] (lora).
//!
//! ## Which crate do I depend on
//!
//! The crates are layered (see `docs/ARCHITECTURE.md`): each depends only
//! on those below it, so a program that only reads safetensors never
//! compiles the quantizers or a GEMM library.
//!
//! | you need | depend on | which also builds |
//! |---|---|---|
//! | any of it, one line | `weightkit` | all of the below |
//! | safetensors files | `weightkit-safetensors` (+ `weightkit-core` to name types) | memmap2, serde_json |
//! | GGUF files | `weightkit-gguf` (+ `weightkit-core`) | memmap2 |
//! | PyTorch checkpoints | `weightkit-pickle` (+ `weightkit-core`) | memmap2, miniz_oxide, crc32fast |
//! | ggml quantization kernels | `weightkit-quant` (+ `weightkit-core`) | half, bytemuck, rayon |
//! | `torch.nn.init` | `weightkit-init` (+ `weightkit-core`) | half, rayon |
//! | open any format, convert, llama-quantize | `weightkit-io` | the four crates above and quant, serde, regex |
//! | LoRA adapters and merges | `weightkit-lora` | `weightkit-io`, `weightkit-init`, faer |
//!
//! `weightkit-core` is a dependency of every other crate, so naming it too
//! costs nothing. None of them depends on burn. Take them from the
//! repository, as git or path dependencies:
//!
//! ```toml
//! [dependencies]
//! weightkit = { git = "https://github.com/weightkit/weightkit" }
//!
//! # Or only what you use (cargo finds each package in the workspace):
//! weightkit-core = { git = "https://github.com/weightkit/weightkit" }
//! weightkit-safetensors = { git = "https://github.com/weightkit/weightkit" }
//! weightkit-quant = { git = "https://github.com/weightkit/weightkit" }
//!
//! # Or from a checkout: { path = "../weightkit/crates/weightkit" }
//! ```
//!
//! The command-line tool is the separate package `weightkit-cli` (binary
//! `weightkit`); it is built on exactly these libraries.
//!
//! ## Open any checkpoint and list its tensors
//!
//! [`open`] detects the format by content (safetensors, PyTorch zip or
//! legacy, GGUF, shard indexes) or takes a Hugging Face model directory.
//! Tensors are lent zero-copy from a memory map; see
//! [`safetensors::SafetensorsFile::open`] for what mapping a file assumes
//! (that no other program modifies it meanwhile).
//!
//! ```
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/tiny-llama");
//! // Four bf16 shards behind a transformers index, opened as one source.
//! let model = weightkit::open(format!("{dir}/safetensors-bf16-sharded"))?;
//! let source = model.source();
//! println!("{}: {} tensors", model.format().name(), source.tensor_infos().len());
//! for info in source.tensor_infos() {
//!     println!("{:<48} {:>5} {}", info.name, info.dtype, info.shape);
//! }
//! // Values as f32, whatever the stored dtype.
//! let i = source.position("model.norm.weight").ok_or("no final norm")?;
//! let norm = source.load(i)?.view().to_f32_vec()?;
//! assert_eq!(norm.len(), source.tensor_infos()[i].elem_count()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Merge a PEFT LoRA adapter
//!
//! [`merge_lora`] streams the base one tensor at a time (memory: the
//! adapter plus one tensor) and writes safetensors atomically;
//! [`merge_into`] writes into any [`TensorSink`] (a GGUF or PyTorch writer)
//! and applies several weighted adapters in turn. The result equals PEFT's
//! `merge_and_unload` (`examples/merge_lora.rs` checks it against PEFT's own
//! output).
//!
//! ```
//! use weightkit::{Adapter, MergeOptions, merge_lora};
//!
//! let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata");
//! let base = weightkit::open(format!("{testdata}/tiny-llama/safetensors-f32"))?;
//! let adapter = Adapter::open(format!("{testdata}/lora/basic"))?;
//! let out = std::env::temp_dir().join(format!("weightkit-doc-{}.safetensors", std::process::id()));
//! let report = merge_lora(base.source(), &adapter, &out, &MergeOptions::default())?;
//! println!("{} tensors merged, {} copied", report.merged.len(), report.copied);
//! assert_eq!(report.merged.len(), adapter.modules().len());
//! std::fs::remove_file(&out)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Base + adapter -> quantized GGUF in one pass
//!
//! [`export`] is `weightkit export`: each base tensor is read once, merged
//! in f32, quantized with llama-quantize's mixture and written, so the GGUF
//! llama.cpp runs comes out without the 16-bit merged copy and the
//! converter's second copy. (The tiny model's 172-wide `ffn_down` rows are
//! no whole number of Q8_0 blocks, so they get F16, as llama-quantize's
//! `--tensor-type` would give them.)
//!
//! ```
//! use weightkit::io::mixture::{Mixture, Options, parse_override};
//! use weightkit::io::{convert::NoProgress, plan::GgufPlanOptions, quantize::QuantizeOptions};
//! use weightkit::{Adapter, ExportFormat, ExportOptions, MergeOptions, export};
//!
//! let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata");
//! let base = weightkit::open(format!("{testdata}/tiny-llama/safetensors-f32"))?;
//! let adapter = Adapter::open(format!("{testdata}/lora/basic"))?;
//! let out = std::env::temp_dir().join(format!("weightkit-doc-{}.gguf", std::process::id()));
//! let options = ExportOptions {
//!     merge: MergeOptions::default(),
//!     format: ExportFormat::Gguf {
//!         mixture: Mixture::Q8_0,
//!         quantize: QuantizeOptions {
//!             choice: Options {
//!                 overrides: vec![parse_override("ffn_down=f16")?],
//!                 ..Options::default()
//!             },
//!             imatrix: None,
//!         },
//!         plan: GgufPlanOptions::default(),
//!     },
//! };
//! let report = export(base, vec![(adapter, 1.0)], &out, &options, &NoProgress)?;
//! println!("{} tensors merged, {} bytes written", report.merged.merged.len(), report.convert.bytes_out);
//! assert!(report.tensors.iter().any(|t| t.dtype == weightkit::DType::Q8_0));
//! std::fs::remove_file(&out)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Quantize a row to Q4_K and back
//!
//! The byte-level API takes f32 rows and returns the bytes a GGUF tensor of
//! that type stores, the same bytes llama.cpp's quantizer writes. (Rows of
//! `n` values; the k-quants need `n` to be a multiple of 256.)
//!
//! ```
//! use weightkit::{DType, dequantize, quantize};
//!
//! // llama.cpp's test input (tests/test-quantize-fns.cpp).
//! let x: Vec<f32> = (0..4096).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
//! let q = quantize(DType::Q4_K, &x, 4096, None)?;
//! assert_eq!(q.len(), 4096 / 256 * 144); // 4.5 bits per value
//! let mut y = vec![0f32; x.len()];
//! dequantize(DType::Q4_K, &q, &mut y)?;
//! let mse = x.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / x.len() as f32;
//! println!("Q4_K: {} bytes, RMSE {:.4}", q.len(), mse.sqrt());
//! // 4 bits over a range of about 4: a step of 4/15, RMSE about step/sqrt(12).
//! assert!(mse.sqrt() < 0.08);
//! # Ok::<(), weightkit::quant::QuantError>(())
//! ```
//!
//! ## Initialise a tensor
//!
//! [`Init`] holds `torch.nn.init`'s schemes; [`Rng::seeded`] gives the same
//! bytes on every platform and thread count, [`Rng::torch`] reproduces
//! `torch.manual_seed` bit for bit.
//!
//! ```
//! use weightkit::{DType, Init, Rng};
//!
//! let mut rng = Rng::seeded(42);
//! let w = Init::kaiming_uniform().tensor(&mut rng, [256, 128], DType::BF16)?;
//! assert_eq!(w.shape().dims(), &[256, 128]);
//! // kaiming_uniform_'s default (a = 0, fan_in, leaky_relu gain sqrt(2))
//! // keeps the variance at 2 / fan_in.
//! let v = w.view().to_f32_vec()?;
//! let var = v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32;
//! assert!((var - 2.0 / 128.0).abs() < 0.1 * 2.0 / 128.0, "{var}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Examples
//!
//! `crates/weightkit/examples/` runs offline on the repository's testdata:
//!
//! - `merge_lora`: merge a PEFT adapter from library code and compare every
//!   tensor with PEFT's own merged weights.
//! - `quant_bench`: time quantize, dequantize and `vec_dot` per type at the
//!   detected SIMD level and at the scalar one.
//! - `dependencies`: a program built on `weightkit-safetensors` and
//!   `weightkit-quant` alone, quantizing a checkpoint to Q8_0 in memory.
//!
//! Run one with `cargo run --release -p weightkit --example merge_lora`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use weightkit_core as core;
pub use weightkit_gguf as gguf;
pub use weightkit_init as init;
pub use weightkit_io as io;
pub use weightkit_lora as lora;
pub use weightkit_pickle as pickle;
pub use weightkit_quant as quant;
pub use weightkit_safetensors as safetensors;

pub use weightkit_core::{
    DType, Metadata, Shape, Tensor, TensorInfo, TensorSink, TensorSource, TensorView,
};
pub use weightkit_init::{Init, Rng};
pub use weightkit_io::{Format, Model, Source, open};
pub use weightkit_lora::{
    Adapter, ExportFormat, ExportOptions, MergeOptions, export, merge_into, merge_lora,
    merged_model,
};
pub use weightkit_quant::{dequantize, quantize};
