//! Integration tests for weightkit-gguf (one binary, modules per area).
//!
//! References: the gguf-py 0.19 fixtures and their JSON dumps
//! (testdata/README.md, ../shared/fixtures/MANIFEST.md), llama.cpp's
//! validation rules (`ggml/src/gguf.cpp`), and hand-built files.

#[path = "../../safetensors/tests/alloc_counter.rs"]
mod alloc_counter;
mod fixtures;
mod malformed;
mod roundtrip;

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
        "wk-gguf-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
