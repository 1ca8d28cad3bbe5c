//! PyTorch's CPU random streams, reproduced.
//!
//! [`TorchGenerator`] is `torch.manual_seed(s)`'s default CPU generator:
//! torch's own mt19937 (`ATen/core/MT19937RNGEngine.h`), `random()` (one
//! 32-bit draw) and `random64()` (two draws, the first in the high half),
//! and the cached second Box-Muller value of `normal_distribution<double>`.
//! On top of it sit the exact transforms of torch's CPU kernels
//! (`ATen/native/cpu/DistributionTemplates.h`):
//!
//! - `uniform_`: 24 random bits `u = (r & 0xFFFFFF) * 2^-24`, then
//!   `u * (to - from) + from` in f32 and a value that rounds up to `to` is
//!   replaced by `from`. Whether that multiply-add is fused depends on the
//!   ATen CPU build ([`TorchCpu`]).
//! - `normal_` for 16 elements or more: every element of an f32 tensor
//!   first gets a uniform (f16/bf16: every element of the full blocks),
//!   then Box-Muller runs in place on blocks of 16 (the first 8 give the
//!   radii, the last 8 the angles); when the size is not a multiple of 16
//!   the last 16 elements are drawn afresh and transformed again. The
//!   AVX2 kernel, which torch also runs on AVX-512 machines (it never
//!   dispatches `normal_` to AVX-512), uses Cephes polynomials for
//!   log/sin/cos; the DEFAULT build calls libm's `logf`/`cosf`/`sinf`.
//! - `normal_` below 16 elements: `normal_distribution<double>` per
//!   element (53-bit uniforms from `random64()`, `log1p`, `sin`, `cos` in
//!   double, the sine cached for the next draw), cast to f32.
//! - `randperm(n)` for `n < 2^32 / 20`: torch's forward Fisher-Yates with
//!   `random() % (n - i)`.

mod avx_mathfun;

use std::f64::consts::PI;

use crate::error::InitError;
use crate::float::{Float, fma32};

const N: usize = 624;
const M: usize = 397;

/// torch's mt19937 engine (identical in output to `std::mt19937` seeded
/// with the low 32 bits of the seed).
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    next: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Mt19937 {
    /// Seeds as `at::mt19937(seed)`: only the low 32 bits are used.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for j in 1..N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Mt19937 { state, next: N }
    }

    fn twist(&mut self) {
        #[inline(always)]
        fn mix(s: &mut [u32; N], k: usize, k1: usize, km: usize) {
            let y = (s[k] & 0x8000_0000) | (s[k1] & 0x7fff_ffff);
            let mag = (y & 1).wrapping_neg() & 0x9908_b0df;
            s[k] = s[km] ^ (y >> 1) ^ mag;
        }
        let s = &mut self.state;
        for k in 0..N - M {
            mix(s, k, k + 1, k + M);
        }
        for k in N - M..N - 1 {
            mix(s, k, k + 1, k + M - N);
        }
        mix(s, N - 1, 0, M - 1);
        self.next = 0;
    }

    /// The next 32-bit output.
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        if self.next >= N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }
}

/// Which ATen CPU kernel build to reproduce.
///
/// torch compiles its distribution kernels once per CPU capability and picks
/// one at start-up (`torch.backends.cpu.get_cpu_capability()`; the
/// `ATEN_CPU_CAPABILITY` environment variable overrides it). The builds give
/// different bits: GCC fuses `u * (to - from) + from` into an FMA where the
/// build enables FMA, and only the AVX2 build has its own vectorised
/// log/sin/cos for `normal_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TorchCpu {
    /// `AVX512`, torch's choice on x86-64 machines with AVX-512 (most
    /// servers). Gives the same bits as [`TorchCpu::Avx2`] for everything
    /// reproduced here: the uniform transform is fused the same way and
    /// `normal_` is never dispatched to AVX-512, so it runs the AVX2 kernel.
    #[default]
    Avx512,
    /// `AVX2`, torch's choice on x86-64 machines without AVX-512: fused
    /// uniform transform, Cephes polynomials for large normal fills (pure
    /// f32 arithmetic: reproduced exactly on any platform).
    Avx2,
    /// `DEFAULT` (`ATEN_CPU_CAPABILITY=default`): no FMA contraction, libm
    /// `logf`/`sinf`/`cosf` for large normal fills (reproduced with the
    /// platform's libm: exact where that is glibc).
    Baseline,
}

impl TorchCpu {
    /// The name `torch.backends.cpu.get_cpu_capability()` prints.
    pub fn name(self) -> &'static str {
        match self {
            TorchCpu::Avx512 => "AVX512",
            TorchCpu::Avx2 => "AVX2",
            TorchCpu::Baseline => "DEFAULT",
        }
    }

    /// Parses torch's capability names (any case).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "AVX512" => Some(TorchCpu::Avx512),
            "AVX2" => Some(TorchCpu::Avx2),
            "DEFAULT" => Some(TorchCpu::Baseline),
            _ => None,
        }
    }

    fn fuses(self) -> bool {
        !matches!(self, TorchCpu::Baseline)
    }
}

/// `torch.manual_seed(seed)`'s default CPU generator, with the transforms of
/// one ATen CPU build.
#[derive(Debug, Clone)]
pub struct TorchGenerator {
    engine: Mt19937,
    seed: u64,
    next_double_normal: Option<f64>,
    cpu: TorchCpu,
}

const DIV24: f32 = 1.0 / (1u32 << 24) as f32;
const DIV53: f64 = 1.0 / (1u64 << 53) as f64;

impl TorchGenerator {
    /// The generator after `torch.manual_seed(seed)` (a negative Python
    /// seed `s` is `s as u64`, as torch wraps it), reproducing the
    /// [`TorchCpu::Avx512`] build.
    pub fn manual_seed(seed: u64) -> Self {
        TorchGenerator {
            engine: Mt19937::new(seed),
            seed,
            next_double_normal: None,
            cpu: TorchCpu::default(),
        }
    }

    /// Reproduces another ATen CPU build.
    pub fn with_cpu(mut self, cpu: TorchCpu) -> Self {
        self.cpu = cpu;
        self
    }

    /// The build reproduced.
    pub fn cpu(&self) -> TorchCpu {
        self.cpu
    }

    /// `torch.initial_seed()`.
    pub fn initial_seed(&self) -> u64 {
        self.seed
    }

    /// `CPUGeneratorImpl::random()`: one 32-bit draw.
    #[inline]
    pub fn random(&mut self) -> u32 {
        self.engine.next_u32()
    }

    /// `CPUGeneratorImpl::random64()`: two draws, the first in the high half.
    #[inline]
    pub fn random64(&mut self) -> u64 {
        let hi = self.random();
        let lo = self.random();
        (u64::from(hi) << 32) | u64::from(lo)
    }

    #[inline]
    fn uniform01_f32(&mut self) -> f32 {
        (self.random() & 0x00ff_ffff) as f32 * DIV24
    }

    #[inline]
    fn uniform01_f64(&mut self) -> f64 {
        (self.random64() & ((1u64 << 53) - 1)) as f64 * DIV53
    }

    /// One `at::normal_distribution<double>(mean, std)` draw.
    pub fn normal_double(&mut self, mean: f64, std: f64) -> f64 {
        let ret = match self.next_double_normal.take() {
            Some(cached) => cached,
            None => {
                let u1 = self.uniform01_f64();
                let u2 = self.uniform01_f64();
                let r = (-2.0 * (-u2).ln_1p()).sqrt();
                let theta = 2.0 * PI * u1;
                self.next_double_normal = Some(r * theta.sin());
                r * theta.cos()
            }
        };
        if self.cpu.fuses() {
            ret.mul_add(std, mean)
        } else {
            ret * std + mean
        }
    }

    /// `tensor.uniform_(from, to)` on a contiguous tensor of `out.len()`
    /// elements of type `ty`; `out` receives the values (exactly
    /// representable in `ty`). Range checks are the caller's.
    pub(crate) fn uniform(&mut self, out: &mut [f32], from: f64, to: f64, ty: Float) {
        // One monomorphic loop per (dtype, fusion) pair.
        match (ty, self.cpu.fuses()) {
            (Float::F32, true) => self.uniform_impl::<true>(out, from, to, |x| x),
            (Float::F32, false) => self.uniform_impl::<false>(out, from, to, |x| x),
            (Float::F16, true) => self.uniform_impl::<true>(out, from, to, |x| Float::F16.round(x)),
            (Float::F16, false) => {
                self.uniform_impl::<false>(out, from, to, |x| Float::F16.round(x))
            }
            (Float::BF16, true) => {
                self.uniform_impl::<true>(out, from, to, |x| Float::BF16.round(x))
            }
            (Float::BF16, false) => {
                self.uniform_impl::<false>(out, from, to, |x| Float::BF16.round(x))
            }
        }
    }

    #[inline(always)]
    fn uniform_impl<const FUSED: bool>(
        &mut self,
        out: &mut [f32],
        from: f64,
        to: f64,
        round: impl Fn(f32) -> f32,
    ) {
        let from_f = from as f32;
        let to_f = to as f32;
        let from_s = round(from_f);
        let to_s = round(to_f);
        let range = to_f - from_f;
        for o in out {
            let u = self.uniform01_f32();
            let v = if FUSED {
                fma32(u, range, from_f)
            } else {
                u * range + from_f
            };
            let v = round(v);
            *o = if v == to_s { from_s } else { v };
        }
    }

    /// `tensor.normal_(mean, std)` on a contiguous tensor of `out.len()`
    /// elements of type `ty`.
    pub(crate) fn normal(&mut self, out: &mut [f32], mean: f64, std: f64, ty: Float) {
        let n = out.len();
        if n < 16 {
            for o in out {
                *o = ty.round_f64(self.normal_double(mean, std));
            }
            return;
        }
        // f32 tensors get a uniform in every element first (the elements
        // past the last full block are drawn, then drawn again for the
        // tail); f16/bf16 go through a 16-element buffer and draw only full
        // blocks before the tail.
        let drawn = if ty == Float::F32 { n } else { n - n % 16 };
        for o in &mut out[..drawn] {
            *o = self.uniform01_f32();
        }
        let (m, s) = (mean as f32, std as f32);
        for block in out.chunks_exact_mut(16) {
            self.fill16(block, m, s);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut out[n - 16..];
            for o in tail.iter_mut() {
                *o = self.uniform01_f32();
            }
            self.fill16(tail, m, s);
        }
        if ty != Float::F32 {
            for o in out {
                *o = ty.round(*o);
            }
        }
    }

    /// Box-Muller on 16 uniforms in place (`NormalFill16`).
    fn fill16(&self, d: &mut [f32], mean: f32, std: f32) {
        let mut u1 = [0f32; 8];
        let mut u2 = [0f32; 8];
        for j in 0..8 {
            u1[j] = 1.0 - d[j];
            u2[j] = d[j + 8];
        }
        let (n1, n2) = match self.cpu {
            TorchCpu::Avx2 | TorchCpu::Avx512 => {
                let log = avx_mathfun::log256_ps(u1);
                let two_pi = (2.0 * PI) as f32;
                let mut theta = [0f32; 8];
                for j in 0..8 {
                    theta[j] = two_pi * u2[j];
                }
                let (s, c) = avx_mathfun::sincos256_ps(theta);
                let mut n1 = [0f32; 8];
                let mut n2 = [0f32; 8];
                for j in 0..8 {
                    let radius = (-2.0 * log[j]).sqrt();
                    n1[j] = radius * c[j];
                    n2[j] = radius * s[j];
                }
                (n1, n2)
            }
            TorchCpu::Baseline => {
                let mut n1 = [0f32; 8];
                let mut n2 = [0f32; 8];
                for j in 0..8 {
                    let radius = (-2.0 * u1[j].ln()).sqrt();
                    let theta = (2.0 * PI * f64::from(u2[j])) as f32;
                    n1[j] = radius * theta.cos();
                    n2[j] = radius * theta.sin();
                }
                (n1, n2)
            }
        };
        for j in 0..8 {
            d[j] = fma32(n1[j], std, mean);
            d[j + 8] = fma32(n2[j], std, mean);
        }
    }

    /// `torch.randperm(n)` (int64 result) on this generator.
    pub fn randperm(&mut self, n: usize) -> Result<Vec<usize>, InitError> {
        if n as u64 >= u64::from(u32::MAX / 20) {
            return Err(InitError::TorchUnsupported(
                "randperm for n >= 2^32 / 20 (torch switches algorithm there)",
            ));
        }
        let mut p: Vec<usize> = (0..n).collect();
        for i in 0..n.saturating_sub(1) {
            let z = self.random() as usize % (n - i);
            p.swap(i, i + z);
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_reference() {
        // std::mt19937 default seed 5489: the 10000th output is 4123659995.
        let mut mt = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = mt.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
        // Only the low 32 bits of the seed matter.
        let mut a = Mt19937::new(7);
        let mut b = Mt19937::new(7 + (1 << 32));
        assert_eq!(a.next_u32(), b.next_u32());
    }
}
