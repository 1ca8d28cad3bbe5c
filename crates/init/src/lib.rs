//! # weightkit-init
//!
//! `torch.nn.init` for weightkit: every scheme, the LoRA initializations,
//! seeded and reproducible, writing F32, F16 or BF16 core tensors.
//!
//! ```
//! use weightkit_core::DType;
//! use weightkit_init::{Init, Rng};
//!
//! // Portable default mode: same bytes on every platform and thread count.
//! let mut rng = Rng::seeded(42);
//! let w = Init::kaiming_uniform().tensor(&mut rng, [256, 128], DType::BF16)?;
//! assert_eq!(w.shape().dims(), &[256, 128]);
//!
//! // Torch-exact mode: the same tensor as
//! //   torch.manual_seed(0); torch.nn.init.kaiming_uniform_(torch.empty(4, 8))
//! let mut rng = Rng::torch(0);
//! let w = Init::kaiming_uniform().tensor(&mut rng, [4, 8], DType::F32)?;
//! assert_eq!(w.view().to_f32_vec()?[0], f32::from_bits(0xBBD4_75DC));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Map
//!
//! - [`fan`]: `_calculate_fan_in_and_fan_out`, `calculate_gain` for every
//!   nonlinearity torch names, [`FanMode`], [`Nonlinearity`].
//! - [`Init`]: the schemes as data (uniform, normal, trunc_normal,
//!   constant, zeros, ones, eye, dirac, orthogonal, sparse, xavier_uniform,
//!   xavier_normal, kaiming_uniform, kaiming_normal), with
//!   [`Init::tensor`], [`Init::fill`] and [`Init::distribution`] (the
//!   closed-form bound or standard deviation, the same double torch
//!   computes).
//! - [`lora`]: PEFT's default (Kaiming-uniform A with `a = sqrt(5)`, zero
//!   B), gaussian (A ~ N(0, 1/r^2)) and PiSSA (top-r SVD, residual written
//!   back).
//! - [`Rng`]: where randomness comes from, [`CounterRng`] or
//!   [`torch::TorchGenerator`].
//!
//! ## Two generator modes
//!
//! **Default ([`Rng::seeded`], [`CounterRng`])**: Philox4x32-10, counter
//! based. Fill number `k` of a generator (its *stream*) keys Philox with
//! `(seed, k)`, and element `i` is a pure function of that key and `i`, so
//! tensors are identical whatever the thread count, and large fills run in
//! parallel with rayon. Uniforms use 32 random bits; normals use Box-Muller
//! on 53-bit uniforms with this crate's own `ln`/`sin`/`cos` built from IEEE
//! operations only (no libm), so the bytes are the same on every platform.
//!
//! **Torch-exact ([`Rng::torch`])**: `torch.manual_seed(s)`'s CPU
//! generator (mt19937) and torch's CPU kernels, so that the same sequence
//! of `torch.nn.init` calls gives the same tensors. Checked against torch
//! 2.15.0 at several seeds and shapes (sizes 1 to 4103, below and above
//! the 16-element vectorised-normal threshold, sizes that are and are not
//! multiples of 16) for every ATen CPU build, fixtures in `testdata/init`:
//!
//! | scheme | f32 | f16 / bf16 |
//! |---|---|---|
//! | `uniform_`, `xavier_uniform_`, `kaiming_uniform_`, LoRA default | bit for bit | bit for bit |
//! | `normal_`, `xavier_normal_`, `kaiming_normal_`, LoRA gaussian (any size) | bit for bit | bit for bit |
//! | `trunc_normal_` (torch 2.15's rejection sampler, both branches) | bit for bit (see below) | bit for bit when the mass of `[a, b]` is > 0.3, else [`InitError::TorchUnsupported`] |
//! | `sparse_` (normals, then `randperm` per column) | bit for bit | bit for bit |
//! | `orthogonal_` | same normals; our f64 Householder QR vs torch's f32 LAPACK: within 6e-7 | idem |
//! | `constant_`, `zeros_`, `ones_`, `eye_`, `dirac_` | bit for bit | bit for bit |
//!
//! torch's bits depend on its CPU build ([`torch::TorchCpu`]). The AVX2
//! and AVX-512 builds fuse `u * (to - from) + from` into an FMA, and both
//! run `normal_` (16 elements or more) through the AVX2 kernel's Cephes
//! polynomials: torch never dispatches `normal_` to AVX-512. That kernel is
//! pure f32 arithmetic, reproduced here operation for operation, including
//! the FMAs GCC contracts, so it is exact on every platform. The `DEFAULT`
//! build ([`torch::TorchCpu::Baseline`]) does not fuse and calls libm's
//! `logf`/`cosf`/`sinf`; this crate calls the platform's libm there too,
//! which is bit for bit where that is glibc (x86-64 Linux, where the
//! fixtures were made) and within an ulp or two of torch elsewhere. The
//! scalar path below 16 elements uses `log1p`, `sin` and `cos` in double
//! and rounds to f32: libm again, exact with glibc, and a libm that
//! differs in the last bit of a double changes the f32 result with
//! probability about 2^-29 per element. `trunc_normal_`'s
//! uniform-proposal branch accepts when `log(u) > bound`; torch takes the
//! log with SLEEF, this crate with a portable `ln`: they decide differently
//! only when the bound lies within one f32 ulp of `log(u)`, which no
//! fixture hits.
//!
//! Throughput (2-core VM, f32, 256 MiB tensors, including page faults):
//! default-mode `kaiming_uniform` about 2 ns per element per thread,
//! `kaiming_normal` about 20; torch-exact mode is sequential like torch,
//! about 3 ns (uniform) and 20 ns (normal: without an FMA instruction in
//! the baseline x86-64 target every fused multiply-add is emulated
//! exactly; build with `-C target-cpu=x86-64-v3` to use the hardware one).
//!
//! ## Errors
//!
//! Impossible requests are [`InitError`] values, never panics: fans of a
//! tensor with fewer than two dimensions, negative or NaN standard
//! deviations, reversed or overflowing uniform ranges, sparsity outside
//! `[0, 1]`, ranks a scheme does not accept, unknown nonlinearity names.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod detmath;
mod error;
pub mod fan;
mod float;
mod linalg;
pub mod lora;
mod philox;
mod rng;
mod scheme;
pub mod torch;

pub use error::InitError;
pub use fan::{FanMode, Nonlinearity, calculate_gain, fan_in_and_fan_out};
pub use lora::{LoraInit, LoraWeights, Pissa, SvdMethod, lora_init, pissa};
pub use rng::{CounterRng, Rng};
pub use scheme::{Distribution, Init, Kaiming};
