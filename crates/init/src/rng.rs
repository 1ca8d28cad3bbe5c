//! The two generator modes behind every random scheme.

use rayon::prelude::*;
use weightkit_core::convert::encode_f32;

use crate::detmath;
use crate::error::InitError;
use crate::float::Float;
use crate::philox::philox4x32_10;
use crate::torch::{TorchCpu, TorchGenerator};

/// Elements per parallel task. Output never depends on it.
const CHUNK: usize = 1 << 14;
/// Below this many elements a fill runs on the calling thread.
const PAR_MIN: usize = 1 << 16;

/// The default generator: counter-based (Philox4x32-10), reproducible for a
/// seed on every platform and for every thread count.
///
/// Each random fill takes the next *stream* number (0, 1, 2, ...) and keys
/// a fresh Philox instance with `(seed, stream)`; element `i` of the fill
/// is a pure function of that key and `i`. So the same sequence of calls on
/// the same seed gives the same tensors however many threads rayon uses,
/// and [`CounterRng::derive`] gives independent, order-free generators per
/// tensor name.
///
/// Transforms use only IEEE-exact operations (no libm): see the crate docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRng {
    key: [u32; 2],
    stream: u64,
}

/// Domain separators for sub-keys, so that two uses of one stream never
/// share Philox inputs.
#[derive(Clone, Copy)]
#[repr(u32)]
pub(crate) enum Domain {
    Fill = 0,
    Sparse = 1,
    Retry = 2,
}

impl CounterRng {
    /// A generator for `seed`, at stream 0.
    pub fn new(seed: u64) -> Self {
        CounterRng {
            key: [seed as u32, (seed >> 32) as u32],
            stream: 0,
        }
    }

    /// An independent generator named by `label` (for example a tensor's
    /// name), at stream 0: `derive("layers.0.q_proj")` gives the same
    /// tensor whatever else was drawn before or after.
    pub fn derive(&self, label: &str) -> Self {
        // FNV-1a over the label, then through Philox under our key: a fixed,
        // documented, platform-independent mapping.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in label.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let w = philox4x32_10([h as u32, (h >> 32) as u32, 0x6465_7276, 0], self.key);
        CounterRng {
            key: [w[0], w[1]],
            stream: 0,
        }
    }

    /// The next stream number a fill will take.
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// Moves to stream `stream` (to replay or skip fills).
    pub fn set_stream(&mut self, stream: u64) {
        self.stream = stream;
    }

    /// Takes a stream and returns the Philox key for one of its domains.
    pub(crate) fn take(&mut self, domain: Domain) -> [u32; 2] {
        let s = self.stream;
        self.stream = self.stream.wrapping_add(1);
        self.subkey(s, domain)
    }

    fn subkey(&self, stream: u64, domain: Domain) -> [u32; 2] {
        let w = philox4x32_10(
            [
                stream as u32,
                (stream >> 32) as u32,
                domain as u32,
                0x7374_726d,
            ],
            self.key,
        );
        [w[0], w[1]]
    }
}

#[inline(always)]
pub(crate) fn block(key: [u32; 2], index: u64, sub: u64) -> [u32; 4] {
    philox4x32_10(
        [
            index as u32,
            (index >> 32) as u32,
            sub as u32,
            (sub >> 32) as u32,
        ],
        key,
    )
}

/// A uniform in (0, 1) from 32 bits.
#[inline]
pub(crate) fn u01_open32(w: u32) -> f64 {
    (f64::from(w) + 0.5) * (1.0 / 4_294_967_296.0)
}

/// A pair of standard normals from one Philox block (Box-Muller, 53-bit
/// uniforms, portable math).
#[inline]
pub(crate) fn normal_pair(w: [u32; 4]) -> (f64, f64) {
    let a = (u64::from(w[0]) << 32) | u64::from(w[1]);
    let b = (u64::from(w[2]) << 32) | u64::from(w[3]);
    // `as i64` first: a 53-bit value converts exactly, and i64 -> f64 is
    // one instruction where u64 -> f64 is not.
    let u1 = (((a >> 11) as i64) as f64 + 0.5) * (1.0 / 9_007_199_254_740_992.0);
    let u2 = ((b >> 11) as i64) as f64 * (1.0 / 9_007_199_254_740_992.0);
    let r = (-2.0 * detmath::ln(u1)).sqrt();
    let (s, c) = detmath::sincos_2pi(u2);
    (r * c, r * s)
}

/// Uniform values on `[from, to)` for elements `start..start + out.len()`.
/// Element `i` uses word `i % 4` of block `i / 4`.
fn counter_uniform(key: [u32; 2], start: usize, out: &mut [f32], from: f64, to: f64, ty: Float) {
    // One monomorphic loop per dtype keeps the rounding out of the hot loop.
    match ty {
        Float::F32 => uniform_impl(key, start, out, from, to, |x| x),
        Float::F16 => uniform_impl(key, start, out, from, to, |x| Float::F16.round(x)),
        Float::BF16 => uniform_impl(key, start, out, from, to, |x| Float::BF16.round(x)),
    }
}

#[inline(always)]
fn uniform_impl(
    key: [u32; 2],
    start: usize,
    out: &mut [f32],
    from: f64,
    to: f64,
    round: impl Fn(f32) -> f32,
) {
    let from_s = round(from as f32);
    let to_s = round(to as f32);
    let width = to - from;
    let one = |w: u32| {
        let v = round((from + width * u01_open32(w)) as f32);
        if v == to_s { from_s } else { v }
    };
    let single = |idx: usize| one(block(key, (idx / 4) as u64, 0)[idx % 4]);
    let (head, body, tail) = split_aligned(start, out, 4);
    for (k, o) in head.iter_mut().enumerate() {
        *o = single(start + k);
    }
    let first = (start + head.len()) / 4;
    for (b, c) in body.chunks_exact_mut(4).enumerate() {
        let w = block(key, (first + b) as u64, 0);
        c[0] = one(w[0]);
        c[1] = one(w[1]);
        c[2] = one(w[2]);
        c[3] = one(w[3]);
    }
    let tail_start = start + out_len(head, body);
    for (k, o) in tail.iter_mut().enumerate() {
        *o = single(tail_start + k);
    }
}

/// Normal values for elements `start..start + out.len()`. Elements `2j`
/// and `2j + 1` are the Box-Muller pair of block `j`.
fn counter_normal(key: [u32; 2], start: usize, out: &mut [f32], mean: f64, std: f64, ty: Float) {
    match ty {
        Float::F32 => normal_impl(key, start, out, mean, std, |x| x),
        Float::F16 => normal_impl(key, start, out, mean, std, |x| Float::F16.round(x)),
        Float::BF16 => normal_impl(key, start, out, mean, std, |x| Float::BF16.round(x)),
    }
}

#[inline(always)]
fn normal_impl(
    key: [u32; 2],
    start: usize,
    out: &mut [f32],
    mean: f64,
    std: f64,
    round: impl Fn(f32) -> f32,
) {
    let one = |z: f64| round((mean + std * z) as f32);
    let single = |idx: usize| {
        let (z0, z1) = normal_pair(block(key, (idx / 2) as u64, 0));
        one(if idx.is_multiple_of(2) { z0 } else { z1 })
    };
    let (head, body, tail) = split_aligned(start, out, 2);
    for (k, o) in head.iter_mut().enumerate() {
        *o = single(start + k);
    }
    let first = (start + head.len()) / 2;
    for (b, c) in body.chunks_exact_mut(2).enumerate() {
        let (z0, z1) = normal_pair(block(key, (first + b) as u64, 0));
        c[0] = one(z0);
        c[1] = one(z1);
    }
    let tail_start = start + out_len(head, body);
    for (k, o) in tail.iter_mut().enumerate() {
        *o = single(tail_start + k);
    }
}

fn out_len(head: &[f32], body: &[f32]) -> usize {
    head.len() + body.len()
}

/// Splits `out` (elements `start..`) into a head up to the next multiple
/// of `align`, a body of whole aligned groups, and a tail.
fn split_aligned(
    start: usize,
    out: &mut [f32],
    align: usize,
) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let head_len = ((align - start % align) % align).min(out.len());
    let (head, rest) = out.split_at_mut(head_len);
    let body_len = rest.len() - rest.len() % align;
    let (body, tail) = rest.split_at_mut(body_len);
    (head, body, tail)
}

/// Runs `f(start, chunk)` over `out`, in parallel for large outputs.
/// Callers guarantee that values depend only on the element index.
fn par_fill(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    if out.len() < PAR_MIN {
        f(0, out);
    } else {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| f(c * CHUNK, chunk));
    }
}

/// Produces `n` values of type `ty` straight into little-endian bytes, in
/// parallel for large outputs, through a per-task f32 buffer.
pub(crate) fn par_fill_bytes(
    n: usize,
    ty: Float,
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Result<Vec<u8>, InitError> {
    let size = ty.dtype().size_in_bytes().unwrap_or(4);
    let len = n
        .checked_mul(size)
        .ok_or(weightkit_core::CoreError::Overflow)?;
    let mut bytes = vec![0u8; len];
    let work = |(c, chunk): (usize, &mut [u8])| -> Result<(), InitError> {
        let mut buf = vec![0f32; chunk.len() / size];
        f(c * CHUNK, &mut buf);
        encode_f32(ty.dtype(), &buf, chunk)?;
        Ok(())
    };
    if n < PAR_MIN {
        bytes
            .chunks_mut(CHUNK * size)
            .enumerate()
            .try_for_each(work)?;
    } else {
        bytes
            .par_chunks_mut(CHUNK * size)
            .enumerate()
            .try_for_each(work)?;
    }
    Ok(bytes)
}

/// Like [`par_fill_bytes`] but strictly in order on the calling thread,
/// for sequential generators: `f` is called on consecutive chunks.
pub(crate) fn seq_fill_bytes(
    n: usize,
    ty: Float,
    mut f: impl FnMut(&mut [f32]),
) -> Result<Vec<u8>, InitError> {
    let size = ty.dtype().size_in_bytes().unwrap_or(4);
    let len = n
        .checked_mul(size)
        .ok_or(weightkit_core::CoreError::Overflow)?;
    let mut bytes = vec![0u8; len];
    let mut buf = vec![0f32; CHUNK.min(n)];
    for chunk in bytes.chunks_mut(CHUNK * size) {
        let vals = &mut buf[..chunk.len() / size];
        f(vals);
        encode_f32(ty.dtype(), vals, chunk)?;
    }
    Ok(bytes)
}

/// Encodes f32 values (already representable in `ty`) as bytes.
pub(crate) fn encode(values: &[f32], ty: Float) -> Result<Vec<u8>, InitError> {
    par_fill_bytes(values.len(), ty, |start, out| {
        out.copy_from_slice(&values[start..start + out.len()]);
    })
}

/// A source of randomness for the initializers: the portable default, or
/// PyTorch's CPU generator reproduced.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Rng {
    /// Counter-based, portable, thread-count independent, parallel.
    Counter(CounterRng),
    /// `torch.manual_seed(seed)`'s generator: tensors identical to
    /// `torch.nn.init` on the CPU (sequential, like torch). Boxed: the
    /// mt19937 state is 2.5 KiB.
    Torch(Box<TorchGenerator>),
}

impl Rng {
    /// The default, portable generator for `seed`.
    pub fn seeded(seed: u64) -> Self {
        Rng::Counter(CounterRng::new(seed))
    }

    /// PyTorch's CPU generator after `torch.manual_seed(seed)`, with the
    /// kernels of torch's AVX-512 / AVX2 builds (what x86-64 machines run).
    pub fn torch(seed: u64) -> Self {
        Rng::Torch(Box::new(TorchGenerator::manual_seed(seed)))
    }

    /// PyTorch's CPU generator with the kernels of a given ATen CPU build.
    pub fn torch_with_cpu(seed: u64, cpu: TorchCpu) -> Self {
        Rng::Torch(Box::new(TorchGenerator::manual_seed(seed).with_cpu(cpu)))
    }

    /// `uniform_` semantics into an f32 buffer.
    pub(crate) fn uniform_into(&mut self, out: &mut [f32], from: f64, to: f64, ty: Float) {
        match self {
            Rng::Counter(c) => {
                let key = c.take(Domain::Fill);
                par_fill(out, |s, o| counter_uniform(key, s, o, from, to, ty));
            }
            Rng::Torch(t) => t.uniform(out, from, to, ty),
        }
    }

    /// `normal_` semantics into an f32 buffer.
    pub(crate) fn normal_into(&mut self, out: &mut [f32], mean: f64, std: f64, ty: Float) {
        match self {
            Rng::Counter(c) => {
                let key = c.take(Domain::Fill);
                par_fill(out, |s, o| counter_normal(key, s, o, mean, std, ty));
            }
            Rng::Torch(t) => t.normal(out, mean, std, ty),
        }
    }

    /// `uniform_` straight to bytes (no f32 copy of the tensor in the
    /// default mode).
    pub(crate) fn uniform_bytes(
        &mut self,
        n: usize,
        from: f64,
        to: f64,
        ty: Float,
    ) -> Result<Vec<u8>, InitError> {
        match self {
            Rng::Counter(c) => {
                let key = c.take(Domain::Fill);
                par_fill_bytes(n, ty, |s, o| counter_uniform(key, s, o, from, to, ty))
            }
            // Uniform draws are element-wise: stream them in chunks.
            Rng::Torch(t) => seq_fill_bytes(n, ty, |o| t.uniform(o, from, to, ty)),
        }
    }

    /// `normal_` straight to bytes.
    pub(crate) fn normal_bytes(
        &mut self,
        n: usize,
        mean: f64,
        std: f64,
        ty: Float,
    ) -> Result<Vec<u8>, InitError> {
        match self {
            Rng::Counter(c) => {
                let key = c.take(Domain::Fill);
                par_fill_bytes(n, ty, |s, o| counter_normal(key, s, o, mean, std, ty))
            }
            Rng::Torch(t) => {
                let mut v = vec![0f32; n];
                t.normal(&mut v, mean, std, ty);
                encode(&v, ty)
            }
        }
    }
}

impl From<CounterRng> for Rng {
    fn from(c: CounterRng) -> Self {
        Rng::Counter(c)
    }
}

impl From<TorchGenerator> for Rng {
    fn from(t: TorchGenerator) -> Self {
        Rng::Torch(Box::new(t))
    }
}

/// `out[i] = f(i)` for every index, in parallel for large outputs.
pub(crate) fn par_map_index(out: &mut [f32], f: impl Fn(usize) -> f32 + Sync) {
    par_fill(out, |start, chunk| {
        for (k, o) in chunk.iter_mut().enumerate() {
            *o = f(start + k);
        }
    });
}
