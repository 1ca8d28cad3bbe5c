//! Runtime selection of SIMD kernels.
//!
//! Kernels are compiled for several instruction sets and one is chosen when
//! the program runs, never at build time (no `target-cpu=native`: users ship
//! binaries). The choice is made once and cached. Every fast kernel has a
//! scalar reference it is tested against, and the scalar path is always
//! available: set `WEIGHTKIT_SIMD=scalar` to force it (CI runs the test suite
//! that way too), or `WEIGHTKIT_SIMD=avx2` to cap the level.
//!
//! Only x86_64 kernels exist today; other architectures use the scalar
//! path. A NEON level would be one more variant and one more module.

use std::sync::atomic::{AtomicU8, Ordering};

pub mod dispatch;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2dots;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2exact;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2legacy;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_dots2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_float;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_floatdot;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_fp4;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_iq4q;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_iq4vnni;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_iqdeq;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_iqdot;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_q12;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_tern;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_vnni;

/// An instruction-set level, in increasing order of capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Level {
    /// Portable Rust, no target features: the reference.
    Scalar,
    /// x86_64 AVX2 + FMA + F16C.
    Avx2,
    /// x86_64 AVX-512 F/BW/VL and VNNI (on top of AVX2): Ice Lake, Zen 4
    /// and later. (A CPU with AVX-512 but no VNNI, such as Skylake-SP, runs
    /// the AVX2 kernels.)
    Avx512,
}

impl Level {
    /// Parses `scalar`, `avx2` or `avx512` (case-insensitive).
    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" | "off" => Some(Level::Scalar),
            "avx2" => Some(Level::Avx2),
            "avx512" => Some(Level::Avx512),
            _ => None,
        }
    }

    /// The name used in benches and messages.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    pub(crate) const fn from_u8(v: u8) -> Level {
        match v {
            2 => Level::Avx2,
            3 => Level::Avx512,
            _ => Level::Scalar,
        }
    }

    pub(crate) const fn to_u8(self) -> u8 {
        match self {
            Level::Scalar => 1,
            Level::Avx2 => 2,
            Level::Avx512 => 3,
        }
    }
}

/// What this CPU supports, ignoring any cap.
pub fn supported() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c");
        let avx512 = avx2
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni");
        if avx512 {
            return Level::Avx512;
        }
        if avx2 {
            return Level::Avx2;
        }
    }
    Level::Scalar
}

/// 0 = not decided yet.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// The level kernels dispatch to: what the CPU supports, capped by the
/// `WEIGHTKIT_SIMD` environment variable (read once) or by [`set_level`].
#[inline]
pub fn level() -> Level {
    match ACTIVE.load(Ordering::Relaxed) {
        0 => init_level(),
        v => Level::from_u8(v),
    }
}

/// [`level`]'s first call: the CPU's level capped by `WEIGHTKIT_SIMD`.
#[cold]
#[inline(never)]
fn init_level() -> Level {
    let mut l = supported();
    if let Some(cap) = std::env::var("WEIGHTKIT_SIMD")
        .ok()
        .as_deref()
        .and_then(Level::parse)
    {
        l = l.min(cap);
    }
    ACTIVE.store(l.to_u8(), Ordering::Relaxed);
    l
}

/// Caps the dispatch level for the whole process (it can never exceed what
/// the CPU supports). Returns the level now in force.
pub fn set_level(cap: Level) -> Level {
    let l = supported().min(cap);
    ACTIVE.store(l.to_u8(), Ordering::Relaxed);
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(Level::parse("AVX2"), Some(Level::Avx2));
        assert_eq!(Level::parse("scalar"), Some(Level::Scalar));
        assert_eq!(Level::parse("sse9"), None);
        assert!(Level::Scalar < Level::Avx2 && Level::Avx2 < Level::Avx512);
        assert!(level() <= supported());
    }
}
