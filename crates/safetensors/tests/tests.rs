//! Integration tests for weightkit-safetensors (one binary, modules per area).
//!
//! References: the fixtures written by transformers 5.24 / safetensors 0.8
//! (testdata/README.md, ../shared/fixtures/MANIFEST.md), the `safetensors`
//! crate itself (an independent reader and writer), `half` (an independent
//! bf16 rounding), and hand-built malformed files.

mod alloc_counter;
mod fixtures;
mod malformed;
mod roundtrip;
mod writer;

use std::path::PathBuf;

pub(crate) fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "wk-st-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
