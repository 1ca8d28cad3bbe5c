//! Fuzzes `weightkit-lora`'s two adapter parsers: `adapter_config.json`
//! (`AdapterConfig::from_json_str`, typed and strict) and llama.cpp GGUF
//! LoRA adapters (`adapter_from_gguf` on whatever the GGUF reader accepts).
//!
//! Neither may panic. A config that parses must validate or give a typed
//! error, and one that validates must round-trip through its own JSON
//! writer. A GGUF adapter that imports must have consistent factors: every
//! module's `lora_A` is `rank x in` and `lora_B` `out x rank`, all finite
//! shapes, and its config must validate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weightkit_gguf::{GgufFile, ReadOptions};
use weightkit_lora::{AdapterConfig, adapter_from_gguf};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = AdapterConfig::from_json_str(text) {
            if config.validate().is_ok() {
                if let Ok(json) = config.to_json_string() {
                    let again = AdapterConfig::from_json_str(&json)
                        .expect("a valid config re-reads from its own JSON");
                    let again = again.to_json_string().expect("and writes it again");
                    assert_eq!(again, json, "config JSON round trip");
                }
            }
        }
    }
    let Ok(file) = GgufFile::from_vec(data.to_vec(), "fuzz.gguf", &ReadOptions::default())
    else {
        return;
    };
    if let Ok(adapter) = adapter_from_gguf(&file, None) {
        adapter.config().validate().expect("an imported adapter's config validates");
        for m in adapter.modules() {
            assert_eq!(m.a.len(), m.rank * m.a_cols, "{}: lora_A size", m.module);
            assert_eq!(m.b.len(), m.b_rows * m.rank, "{}: lora_B size", m.module);
        }
    }
});
