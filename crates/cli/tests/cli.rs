//! End-to-end tests of the `weightkit` binary on the repository's test data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_weightkit");
const SHARDED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/tiny-llama/safetensors-bf16-sharded"
);
const F32_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/tiny-llama/safetensors-f32/model.safetensors"
);

fn weightkit(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the weightkit binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

/// Runs `inspect PATH --json`, checks success, parses the object.
fn inspect_json(path: &str) -> Value {
    let o = weightkit(&["inspect", path, "--json"]);
    assert!(o.status.success(), "inspect failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("--json prints one JSON object")
}

/// Runs `inspect PATH`, checks exit code 1 and a one-line `error:` message.
fn inspect_error(path: &Path) -> String {
    let o = weightkit(&["inspect", path.to_str().expect("UTF-8 path")]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    assert!(o.stdout.is_empty());
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is an integer"))
}

/// transformers' `num_parameters()` for an untied Llama, from config.json.
fn llama_parameters(config: &Value) -> u64 {
    let get = |k: &str| config[k].as_u64().unwrap_or_else(|| panic!("config `{k}`"));
    let (v, h, l, i) = (
        get("vocab_size"),
        get("hidden_size"),
        get("num_hidden_layers"),
        get("intermediate_size"),
    );
    let n_heads = get("num_attention_heads");
    let n_kv = config["num_key_value_heads"].as_u64().unwrap_or(n_heads);
    let head_dim = config["head_dim"].as_u64().unwrap_or(h / n_heads);
    let attention = h * h + 2 * h * (n_kv * head_dim) + h * h;
    let mlp = 3 * h * i;
    let norms = 2 * h;
    v * h + l * (attention + mlp + norms) + h + v * h
}

#[test]
fn sharded_bf16_json() {
    let dir = PathBuf::from(SHARDED);
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["tie_word_embeddings"], Value::Bool(false));
    let expected = llama_parameters(&config);
    assert_eq!(expected, 123_712);

    let r = inspect_json(SHARDED);
    assert_eq!(u64_of(&r, "parameter_count"), expected);
    assert_eq!(u64_of(&r, "tensor_count"), 21);
    assert_eq!(r["format"], "safetensors-sharded");
    assert_eq!(r["shards"].as_array().map(Vec::len), Some(4));
    assert_eq!(u64_of(&r, "total_bytes"), 247_424);

    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    assert_eq!(index["metadata"]["total_size"].as_u64(), Some(247_424));
    assert_eq!(u64_of(&r, "declared_total_size"), 247_424);

    let dtypes = r["dtypes"].as_object().unwrap();
    assert_eq!(dtypes.len(), 1);
    assert_eq!(u64_of(&dtypes["BF16"], "count"), 21);
    assert_eq!(u64_of(&dtypes["BF16"], "bytes"), 247_424);
    let tensors = r["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 21);
    assert!(tensors.iter().all(|t| t["dtype"] == "BF16"));
    let bytes: u64 = tensors.iter().map(|t| u64_of(t, "bytes")).sum();
    assert_eq!(bytes, 247_424);

    // Index metadata: integers stay numbers; shard metadata: strings.
    assert_eq!(r["metadata"]["total_size"], 247_424);
    assert_eq!(r["metadata"]["format"], "pt");
    assert_eq!(r["config"]["model_type"], "llama");

    // The index file itself gives the same answer as its directory.
    let index_path = dir.join("model.safetensors.index.json");
    let r2 = inspect_json(index_path.to_str().unwrap());
    assert_eq!(r2["tensors"], r["tensors"]);
}

#[test]
fn sharded_bf16_human() {
    let o = weightkit(&["inspect", SHARDED]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "safetensors (sharded, 4 shards)",
        "123,712",
        "247,424 bytes (241.6 KiB)",
        "matches the data size",
        "model-00004-of-00004.safetensors",
        "LlamaForCausalLM",
        "bfloat16",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
}

#[test]
fn single_f32_file() {
    let r = inspect_json(F32_FILE);
    assert_eq!(r["format"], "safetensors");
    assert!(r.get("shards").is_none());
    assert_eq!(u64_of(&r, "tensor_count"), 21);
    assert_eq!(u64_of(&r, "parameter_count"), 123_712);
    assert_eq!(u64_of(&r, "total_bytes"), 494_848);
    let dtypes = r["dtypes"].as_object().unwrap();
    assert_eq!(dtypes.keys().collect::<Vec<_>>(), ["F32"]);
    assert_eq!(u64_of(&dtypes["F32"], "bytes"), 494_848);

    let o = weightkit(&["inspect", F32_FILE]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let row = out
        .lines()
        .find(|l| l.contains("model.layers.0.self_attn.q_proj.weight"))
        .unwrap_or_else(|| panic!("no q_proj row in\n{out}"));
    assert!(row.contains("F32"), "{row}");
    assert!(row.contains("[64, 64]"), "{row}");
    assert!(row.trim_end().ends_with("16,384"), "{row}");
    assert!(out.contains("494,848 bytes (483.2 KiB)"), "{out}");
    // Columns are aligned: every table row puts DTYPE at the same column.
    let table: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("NAME"))
        .collect();
    assert_eq!(table.len(), 22);
    let col = table[0].find("DTYPE").unwrap();
    assert!(
        table[1..].iter().all(|l| l[col..].starts_with("F32 ")),
        "{out}"
    );
}

#[test]
fn nonexistent_path() {
    let err = inspect_error(Path::new("/definitely/not/here.safetensors"));
    assert!(err.contains("/definitely/not/here.safetensors"), "{err}");
}

#[test]
fn too_short_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.safetensors");
    std::fs::write(&path, b"abc").unwrap();
    let err = inspect_error(&path);
    assert!(err.contains("too short"), "{err}");
}

#[test]
fn truncated_file() {
    let names: Vec<String> = inspect_json(F32_FILE)["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    let bytes = std::fs::read(F32_FILE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = inspect_error(&path);
    assert!(
        names.iter().any(|n| err.contains(&format!("`{n}`"))),
        "no tensor named in: {err}"
    );
}

#[test]
fn unsupported_formats() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        ("model.gguf", b"GGUF\x03\0\0\0\0\0\0\0\0\0\0\0", "GGUF"),
        ("model.pt", b"PK\x03\x04\x14\0\0\0\0\0", "zip"),
        ("pytorch_model.bin", b"\x80\x02\x8a\x0alZ\xfc", "pickle"),
    ];
    for (name, content, what) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let err = inspect_error(&path);
        assert!(err.contains("unsupported format"), "{err}");
        assert!(err.contains(what), "{err}");
    }
    // A model directory holding only a GGUF file says so too.
    let gguf_dir = dir.path().join("gguf-model");
    std::fs::create_dir(&gguf_dir).unwrap();
    std::fs::write(gguf_dir.join("model.gguf"), b"GGUF\x03\0\0\0").unwrap();
    let err = inspect_error(&gguf_dir);
    assert!(err.contains("unsupported format: GGUF"), "{err}");
}

#[test]
fn usage_errors_keep_clap_exit_code() {
    let o = weightkit(&["inspect"]);
    assert_eq!(o.status.code(), Some(2));
    let o = weightkit(&["inspect", F32_FILE, "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    let o = weightkit(&["--version"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("weightkit "));
}

#[cfg(unix)]
#[test]
fn broken_pipe_exits_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    // Close the read end at once: every write fails with EPIPE.
    let mut child = Command::new(BIN)
        .args(["inspect", SHARDED])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert!(err.is_empty(), "{err}");
}
