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
const GGUF_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/gguf");

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
    let path = dir.path().join("model.bin");
    std::fs::write(&path, b"tjgg\x03\0\0\0\0\0\0\0").unwrap();
    let err = inspect_error(&path);
    assert!(err.contains("unsupported format"), "{err}");
    assert!(err.contains("legacy GGML"), "{err}");
    assert!(err.contains("GGUF") && err.contains("PyTorch"), "{err}");

    // Zip and pickle magics are PyTorch's now: broken ones are reader errors.
    let cases: [(&str, &[u8], &str); 2] = [
        ("model.pt", b"PK\x03\x04\x14\0\0\0\0\0", "zip"),
        ("pytorch_model.bin", b"\x80\x02\x8a\x0alZ\xfc", "pickle"),
    ];
    for (name, content, what) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let err = inspect_error(&path);
        assert!(err.contains("as PyTorch"), "{err}");
        assert!(err.contains(what), "{err}");
    }
    // A model directory holding only a (broken) pickle reads it.
    let pickle_dir = dir.path().join("pickle-model");
    std::fs::create_dir(&pickle_dir).unwrap();
    std::fs::write(pickle_dir.join("pytorch_model.bin"), b"\x80\x02\x8a\x0alZ").unwrap();
    let err = inspect_error(&pickle_dir);
    assert!(err.contains("pytorch_model.bin as PyTorch"), "{err}");
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

// ---------------------------------------------------------------- GGUF

/// `testdata/gguf/<name>`.
fn gguf_fixture(name: &str) -> String {
    format!("{GGUF_DIR}/{name}")
}

/// The gguf-py dump written beside a fixture.
fn gguf_dump(name: &str) -> Value {
    let text = std::fs::read(gguf_fixture(name)).unwrap();
    serde_json::from_slice(&text).unwrap()
}

/// Our short GGUF type name for a gguf-py type name (`UINT32` -> `u32`).
fn short_type(gguf_py: &str) -> &'static str {
    match gguf_py {
        "UINT8" => "u8",
        "INT8" => "i8",
        "UINT16" => "u16",
        "INT16" => "i16",
        "UINT32" => "u32",
        "INT32" => "i32",
        "FLOAT32" => "f32",
        "BOOL" => "bool",
        "STRING" => "str",
        "ARRAY" => "arr",
        "UINT64" => "u64",
        "INT64" => "i64",
        "FLOAT64" => "f64",
        other => panic!("unknown gguf-py type {other}"),
    }
}

/// Checks one of our JSON metadata values against gguf-py's dump of it:
/// integers and strings exactly, floats by their bit pattern.
fn check_value(key: &str, ours: &Value, ty: &str, dumped: &Value) {
    match ty {
        "FLOAT32" => {
            let bits = u32::from_str_radix(&dumped["bits"].as_str().unwrap()[2..], 16).unwrap();
            // Written in shortest f32 form: parse, narrow, compare bits.
            let x = ours.as_f64().unwrap_or_else(|| panic!("{key}: {ours}"));
            #[allow(clippy::cast_possible_truncation)]
            let x = x as f32;
            assert_eq!(x.to_bits(), bits, "{key}: {ours} vs {dumped}");
        }
        "FLOAT64" => {
            let bits = u64::from_str_radix(&dumped["bits"].as_str().unwrap()[2..], 16).unwrap();
            let x = ours.as_f64().unwrap_or_else(|| panic!("{key}: {ours}"));
            assert_eq!(x.to_bits(), bits, "{key}: {ours} vs {dumped}");
        }
        _ => assert_eq!(ours, dumped, "{key}"),
    }
}

/// Checks `--json` metadata (values, `metadata_types`, file order) against
/// a gguf-py dump's `kv_order` and `kv`.
fn check_metadata(ours: &Value, json_text: &str, dump: &Value) {
    let order: Vec<&str> = dump["kv_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let meta = ours["metadata"].as_object().unwrap();
    assert_eq!(meta.len(), order.len());
    let types = ours["metadata_types"].as_object().unwrap();
    for key in &order {
        let kv = &dump["kv"][key];
        let ty = kv["type"].as_str().unwrap();
        let value = &meta[*key];
        if ty == "ARRAY" {
            let elem = kv["array_type"].as_str().unwrap();
            let items = kv["value"].as_array().unwrap();
            let ours_items = value.as_array().unwrap_or_else(|| panic!("{key}: {value}"));
            assert_eq!(ours_items.len(), items.len(), "{key}");
            assert_eq!(
                types[*key],
                format!("arr[{},{}]", short_type(elem), items.len()),
                "{key}"
            );
            if elem == "ARRAY" {
                // Nested arrays: compared whole (the fixture's are ints and strings).
                assert_eq!(value, &kv["value"], "{key}");
            } else {
                for (o, d) in ours_items.iter().zip(items) {
                    check_value(key, o, elem, d);
                }
            }
        } else {
            assert_eq!(types[*key], short_type(ty), "{key}");
            check_value(key, value, ty, &kv["value"]);
        }
    }
    // The object is in file order in the text (serde_json's map sorts).
    let positions: Vec<usize> = order
        .iter()
        .map(|k| {
            json_text
                .find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k} not in the output"))
        })
        .collect();
    assert!(positions.is_sorted(), "metadata out of file order");
}

/// Checks `--json` tensors against a gguf-py dump's `tensors`.
fn check_tensors(ours: &Value, dump: &Value) {
    let expected = dump["tensors"].as_array().unwrap();
    let tensors = ours["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), expected.len());
    assert_eq!(u64_of(ours, "tensor_count"), expected.len() as u64);
    for (t, e) in tensors.iter().zip(expected) {
        let name = e["name"].as_str().unwrap();
        assert_eq!(t["name"], e["name"]);
        assert_eq!(t["shape"], e["shape_numpy"], "{name}");
        assert_eq!(t["ne"], e["shape_gguf"], "{name}");
        assert_eq!(t["ggml_type"], e["type"], "{name}");
        assert_eq!(t["dtype"], e["type"], "{name}");
        assert_eq!(t["ggml_type_id"], e["type_id"], "{name}");
        assert_eq!(t["bytes"], e["n_bytes"], "{name}");
        assert_eq!(t["offset"], e["offset"], "{name}");
    }
    let total: u64 = expected.iter().map(|e| u64_of(e, "n_bytes")).sum();
    assert_eq!(u64_of(ours, "total_bytes"), total);
    assert_eq!(ours["alignment"], dump["alignment"]);
    assert_eq!(ours["data_offset"], dump["data_section_offset"]);
}

/// `inspect --json` of a fixture: the parsed object and its text.
fn inspect_json_text(path: &str, extra: &[&str]) -> (Value, String) {
    let mut args = vec!["inspect", path, "--json"];
    args.extend_from_slice(extra);
    let o = weightkit(&args);
    assert!(o.status.success(), "inspect failed: {}", stderr(&o));
    let text = stdout(&o);
    (serde_json::from_str(&text).unwrap(), text)
}

#[test]
fn gguf_all_metadata_types_json() {
    let dump = gguf_dump("metadata-all-types.json");
    let (r, text) = inspect_json_text(&gguf_fixture("metadata-all-types.gguf"), &[]);
    assert_eq!(r["format"], "gguf");
    assert_eq!(r["version"], dump["gguf_version"]);
    assert_eq!(r["version"], 3);
    assert_eq!(u64_of(&r, "tensor_count"), 9);
    assert_eq!(r["tensor_count"], dump["n_tensors"]);
    assert_eq!(u64_of(&r, "alignment"), 64);
    assert_eq!(u64_of(&r, "data_offset"), 1728);
    assert_eq!(
        r["metadata"]["test.uint64"].as_u64(),
        Some(9_223_372_036_854_775_813)
    );
    assert_eq!(
        r["metadata"]["test.string_utf8"],
        dump["kv"]["test.string_utf8"]["value"]
    );
    assert_eq!(r["metadata"]["test.string_utf8"], "héllo wörld — 日本語 🦙");
    assert_eq!(r["metadata_types"]["test.array.string"], "arr[str,5]");
    check_metadata(&r, &text, &dump);
    check_tensors(&r, &dump);
    let params: u64 = r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product::<u64>()
        })
        .sum();
    assert_eq!(u64_of(&r, "parameter_count"), params);
    // No general.file_type in this file.
    assert!(r.get("file_type").is_none());
}

#[test]
fn gguf_all_metadata_types_human() {
    let dump = gguf_dump("metadata-all-types.json");
    let o = weightkit(&["inspect", &gguf_fixture("metadata-all-types.gguf")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "GGUF v3",
        "architecture     fixture",
        "data offset      1728 (0x6c0)",
        "metadata (31):",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    // One line per key, in file order, with its type as llama.cpp prints it.
    let lines: Vec<&str> = out.lines().collect();
    let mut last = 0;
    for key in dump["kv_order"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        let kv = &dump["kv"][key];
        let ty = match kv["type"].as_str().unwrap() {
            "ARRAY" => format!(
                "arr[{},{}]",
                short_type(kv["array_type"].as_str().unwrap()),
                kv["value"].as_array().unwrap().len()
            ),
            t => short_type(t).to_owned(),
        };
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no line for {key} in\n{out}"));
        assert!(at > last, "{key} out of order");
        last = at;
        let fields: Vec<&str> = lines[at].split_whitespace().collect();
        assert_eq!(fields[1], ty, "{}", lines[at]);
        assert_eq!(fields[2], "=", "{}", lines[at]);
    }
    for needle in [
        "= 9223372036854775813",
        "= héllo wörld — 日本語 🦙",
        "= [0.5, -1.25, 0.1, 1e30]",
        r#"= ["a", "ü", "", "🦙 llama", "tab\tnewline\n"]"#,
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
}

#[test]
fn gguf_quantized_human() {
    let o = weightkit(&["inspect", &gguf_fixture("quantized.gguf")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let dump = gguf_dump("quantized.json");
    let table: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("NAME"))
        .collect();
    let header = table[0];
    for col in ["TYPE", "SHAPE", "BYTES", "NE"] {
        assert!(header.contains(col), "{header}");
    }
    // Every tensor: its row has the type, row-major shape, bytes and ne.
    for e in dump["tensors"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let row = table
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{out}"));
        let dims = |v: &Value| {
            let d: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect();
            d.join(", ")
        };
        let ty = e["type"].as_str().unwrap();
        assert_eq!(row.split_whitespace().nth(1), Some(ty), "{row}");
        assert!(
            row.contains(&format!("[{}]", dims(&e["shape_numpy"]))),
            "{row}"
        );
        assert!(
            row.contains(&format!("ne=[{}]", dims(&e["shape_gguf"]))),
            "{row}"
        );
        let bytes = u64_of(e, "n_bytes");
        assert!(
            row.split_whitespace()
                .any(|c| c.replace(',', "") == bytes.to_string()),
            "{row}"
        );
    }
    // The cases the brief names, spelled out.
    let row = table
        .iter()
        .find(|l| l.trim_start().starts_with("q.Q8_0.3d "))
        .unwrap();
    assert!(
        row.contains("[2, 5, 64]") && row.contains("ne=[64, 5, 2]"),
        "{row}"
    );
    for ty in ["Q4_0", "Q8_0", "MXFP4"] {
        assert!(
            table
                .iter()
                .any(|l| l.split_whitespace().nth(1) == Some(ty)),
            "no {ty} row in\n{out}"
        );
    }
    // The dtype breakdown has bits per weight.
    assert!(out.contains("8.50 bpw"), "{out}");
    assert!(out.contains("4.25 bpw"), "{out}");
    assert!(out.contains("quantization version  2"), "{out}");
    assert!(
        !out.lines().any(|l| l.ends_with(' ')),
        "trailing spaces:\n{out}"
    );
}

#[test]
fn gguf_quantized_json() {
    let dump = gguf_dump("quantized.json");
    let (r, _) = inspect_json_text(&gguf_fixture("quantized.gguf"), &[]);
    check_tensors(&r, &dump);
    let dtypes = r["dtypes"].as_object().unwrap();
    assert_eq!(u64_of(&dtypes["Q8_0"], "count"), 2);
    assert_eq!(dtypes["Q8_0"]["bits_per_weight"], 8.5);
    assert_eq!(dtypes["Q4_0"]["bits_per_weight"], 4.5);
    let bpw = r["bits_per_weight"].as_f64().unwrap();
    #[allow(clippy::cast_precision_loss)]
    let expected = (u64_of(&r, "total_bytes") * 8) as f64 / u64_of(&r, "parameter_count") as f64;
    assert!((bpw - expected).abs() < 1e-12, "{bpw} vs {expected}");
    assert_eq!(r["metadata"]["general.quantization_version"], 2);
    assert_eq!(r["metadata_types"]["general.quantization_version"], "u32");
}

#[test]
fn gguf_nested_arrays_need_the_flag() {
    let path = gguf_fixture("metadata-nested-array.gguf");
    let err = inspect_error(Path::new(&path));
    assert!(err.contains("nested array"), "{err}");
    assert!(err.contains("test.nested.int32"), "{err}");
    assert!(err.contains("--allow-nested-arrays"), "{err}");

    let dump = gguf_dump("metadata-nested-array.json");
    let (r, text) = inspect_json_text(&path, &["--allow-nested-arrays"]);
    check_metadata(&r, &text, &dump);
    assert_eq!(u64_of(&r, "tensor_count"), 0);
    assert!(r.get("bits_per_weight").is_none());

    let o = weightkit(&["inspect", &path, "--allow-nested-arrays"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("arr[arr,2]  = [[1, 2, 3], [4, 5]]"), "{out}");
    assert!(out.contains("tensors: none"), "{out}");
}

#[test]
fn gguf_truncated() {
    let bytes = std::fs::read(gguf_fixture("quantized.gguf")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Cut in the data (tensors named), in the tensor infos, in the magic.
    for (len, needle) in [
        (bytes.len() / 2, "data ends at file offset"),
        (bytes.len() - 1, "truncated"),
        (400, "truncated"),
        (20, "cannot fit"),
        (4, "truncated"),
    ] {
        let path = dir.path().join(format!("cut-{len}.bin"));
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = inspect_error(&path);
        assert!(err.contains("as GGUF"), "{len}: {err}");
        assert!(err.contains(needle), "{len}: {err}");
    }
    let path = dir.path().join("half.gguf");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = inspect_error(&path);
    let names: Vec<String> = gguf_dump("quantized.json")["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("`{}`", t["name"].as_str().unwrap()))
        .collect();
    assert!(names.iter().any(|n| err.contains(n)), "{err}");
}

#[test]
fn gguf_detected_by_magic_and_in_directories() {
    let bytes = std::fs::read(gguf_fixture("quantized.gguf")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Any name: the magic decides.
    let odd = dir.path().join("weights.bin");
    std::fs::write(&odd, &bytes).unwrap();
    let r = inspect_json(odd.to_str().unwrap());
    assert_eq!(r["format"], "gguf");

    // A directory with one .gguf (and no safetensors) is that file.
    let one = dir.path().join("one");
    std::fs::create_dir(&one).unwrap();
    std::fs::write(one.join("model-Q8_0.gguf"), &bytes).unwrap();
    std::fs::write(one.join("README.md"), b"# a model").unwrap();
    let r = inspect_json(one.to_str().unwrap());
    assert_eq!(r["format"], "gguf");
    assert!(
        r["path"].as_str().unwrap().ends_with("model-Q8_0.gguf"),
        "{}",
        r["path"]
    );
    assert_eq!(u64_of(&r, "tensor_count"), 12);

    // Two: which one? An error naming both.
    std::fs::write(one.join("model-F16.gguf"), &bytes).unwrap();
    let err = inspect_error(&one);
    assert!(err.contains("2 .gguf files"), "{err}");
    assert!(err.contains("model-F16.gguf, model-Q8_0.gguf"), "{err}");

    // Any safetensors file: still a safetensors directory.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    std::fs::copy(F32_FILE, mixed.join("model.safetensors")).unwrap();
    std::fs::write(mixed.join("model.gguf"), &bytes).unwrap();
    let r = inspect_json(mixed.to_str().unwrap());
    assert_eq!(r["format"], "safetensors");
    assert!(r.get("version").is_none());
    assert!(r.get("metadata_types").is_none());
    assert!(r["tensors"][0].get("ne").is_none());
}

/// A llama.cpp-like file: 32,000-entry tokenizer arrays, a long chat
/// template with control characters, `general.file_type`, a NaN score.
fn llama_like_gguf(path: &Path) {
    use weightkit_core::{Array, DType, Metadata, TensorInfo, Value};
    let n_vocab = 32_000usize;
    let tokens: Vec<String> = (0..n_vocab).map(|i| format!("tok{i}\n")).collect();
    let mut scores: Vec<f32> = (0..n_vocab).map(|i| -(i as f32)).collect();
    scores[1] = f32::NAN;
    scores[2] = f32::INFINITY;
    let template = format!("{{% for m in messages %}}\x1b[31m{}", "x".repeat(5000));
    let mut m = Metadata::new();
    m.insert("general.architecture", "llama");
    m.insert("general.name", "Tiny\x1b]0;pwned\x07 Llama");
    m.insert("general.file_type", Value::U32(15));
    m.insert("general.quantization_version", Value::U32(2));
    m.insert("llama.context_length", Value::U32(4096));
    m.insert("tokenizer.ggml.model", "llama");
    m.insert("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    m.insert("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    m.insert(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![1; n_vocab])),
    );
    m.insert("tokenizer.chat_template", template);
    let q = TensorInfo::new("blk.0.attn_q.weight", DType::Q4_K, vec![4, 256]);
    let f = TensorInfo::new("output_norm.weight", DType::F32, vec![256]);
    let q_bytes = vec![0u8; q.byte_len().unwrap()];
    let f_bytes = vec![0u8; f.byte_len().unwrap()];
    let file = weightkit_gguf::serialize(
        &m,
        &[(q, &q_bytes[..]), (f, &f_bytes[..])],
        &weightkit_gguf::WriterOptions::default(),
    )
    .unwrap();
    std::fs::write(path, file).unwrap();
}

#[test]
fn gguf_tokenizer_arrays_do_not_flood() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-llama-Q4_K_M.gguf");
    llama_like_gguf(&path);
    let p = path.to_str().unwrap();

    let o = weightkit(&["inspect", p]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.lines().count() < 50, "{out}");
    assert!(out.lines().all(|l| l.chars().count() < 300), "{out}");
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
    for needle in [
        "file type             15 (Q4_K_M)",
        "architecture          llama",
        "name                  Tiny\\u{1b}]0;pwned\\u{7} Llama",
        "arr[str,32000]  = [\"tok0\\n\", \"tok1\\n\"",
        "(32,000 items)]",
        "arr[f32,32000]  = [-0.0, NaN, inf, -3.0",
        "\\u{1b}[31mxxx",
        "(5,028 chars)",
        "blk.0.attn_q.weight",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    let row = out
        .lines()
        .find(|l| l.contains("blk.0.attn_q.weight"))
        .unwrap();
    assert!(row.contains("Q4_K") && row.contains("[4, 256]") && row.contains("ne=[256, 4]"));
    // 144 bytes per 256 weights: 4.5 bits.
    assert!(out.contains("4.50 bpw"), "{out}");

    // JSON has everything, non-finite floats as null.
    let r = inspect_json(p);
    let tokens = r["metadata"]["tokenizer.ggml.tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 32_000);
    assert_eq!(tokens[31_999], "tok31999\n");
    let scores = r["metadata"]["tokenizer.ggml.scores"].as_array().unwrap();
    assert_eq!(scores.len(), 32_000);
    assert_eq!(scores[0], 0.0);
    assert!(scores[1].is_null() && scores[2].is_null());
    assert_eq!(scores[3], -3.0);
    assert_eq!(r["file_type"]["id"], 15);
    assert_eq!(r["file_type"]["name"], "Q4_K_M");
    assert_eq!(
        r["metadata_types"]["tokenizer.ggml.token_type"],
        "arr[i32,32000]"
    );
    assert_eq!(
        r["metadata"]["tokenizer.chat_template"]
            .as_str()
            .unwrap()
            .len(),
        5028
    );
}

// ------------------------------------------------------------- PyTorch

const TORCH_F16_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/tiny-llama/pytorch-bin-f16"
);
const TORCH_F16: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/tiny-llama/pytorch-bin-f16/pytorch_model.bin"
);
const TORCH_LEGACY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/tiny-llama/legacy/pytorch_model.bin"
);
const VIEWS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/pickle/views.pt"
);
const VIEWS_LEGACY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/pickle/views.legacy.pt"
);
const MALICIOUS_PICKLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/pickle/vm/malicious"
);

/// `(name, shape)` of every tensor in a `--json` report, sorted by name.
fn names_and_shapes(r: &Value) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t["shape"].clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The tensor called `name` in a `--json` report.
fn tensor_json<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

/// The f16 fixture's tensors and their bytes.
fn f16_tensors() -> Vec<(weightkit_core::TensorInfo, Vec<u8>)> {
    let f = weightkit_pickle::TorchFile::open(TORCH_F16).unwrap();
    f.tensors()
        .iter()
        .enumerate()
        .map(|(i, info)| (info.clone(), f.tensor_at(i).unwrap().view().data().to_vec()))
        .collect()
}

/// Writes `tensors` with `TorchWriter` (prefix `archive`).
fn write_torch(path: &Path, tensors: &[(weightkit_core::TensorInfo, Vec<u8>)]) {
    use weightkit_core::TensorSink;
    let infos = tensors.iter().map(|(i, _)| i.clone()).collect();
    let mut w = weightkit_pickle::TorchWriter::create(path, infos).unwrap();
    for (info, data) in tensors {
        w.write_tensor(&info.name, data).unwrap();
    }
    w.finish().unwrap();
}

/// A zip checkpoint: `archive/data.pkl` is `pkl`, storage `i` is
/// `archive/data/<i>`.
fn torch_zip(pkl: &[u8], storages: &[&[u8]]) -> Vec<u8> {
    let mut z = weightkit_pickle::zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.write_entry("archive/data.pkl", pkl).unwrap();
    z.write_entry("archive/byteorder", b"little").unwrap();
    for (i, s) in storages.iter().enumerate() {
        z.write_entry(&format!("archive/data/{i}"), s).unwrap();
    }
    z.write_entry("archive/version", b"3\n").unwrap();
    z.finish().unwrap().into_inner()
}

/// A pickle `BINUNICODE` string.
fn pickle_str(s: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

#[test]
fn torch_zip_f16_json() {
    let r = inspect_json(TORCH_F16);
    assert_eq!(r["format"], "pytorch");
    assert_eq!(r["container"], "zip");
    assert_eq!(r["prefix"], "pytorch_model");
    assert_eq!(u64_of(&r, "tensor_count"), 21);
    assert_eq!(u64_of(&r, "parameter_count"), 123_712);
    assert_eq!(u64_of(&r, "total_bytes"), 247_424);
    assert_eq!(u64_of(&r, "storage_count"), 21);
    assert_eq!(u64_of(&r, "storage_bytes"), 247_424);
    assert_eq!(r["skipped"], serde_json::json!([]));
    let dtypes = r["dtypes"].as_object().unwrap();
    assert_eq!(dtypes.keys().collect::<Vec<_>>(), ["F16"]);
    assert_eq!(u64_of(&dtypes["F16"], "count"), 21);
    let tensors = r["tensors"].as_array().unwrap();
    assert!(tensors.iter().all(|t| t["dtype"] == "F16"));
    assert!(tensors.iter().all(|t| t["contiguous"] == true));
    assert!(tensors.iter().all(|t| t["storage_offset"] == 0));
    assert!(tensors.iter().all(|t| t.get("shard").is_none()));
    let q = tensor_json(&r, "model.layers.0.self_attn.q_proj.weight");
    assert_eq!(q["shape"], serde_json::json!([64, 64]));
    assert_eq!(q["stride"], serde_json::json!([64, 1]));
    assert_eq!(q["bytes"], 8192);
    // The same model as the safetensors fixture, tensor for tensor.
    assert_eq!(
        names_and_shapes(&r),
        names_and_shapes(&inspect_json(F32_FILE))
    );
    // config.json beside the file.
    assert_eq!(r["config"]["dtype"], "float16");
}

#[test]
fn torch_legacy_json() {
    let r = inspect_json(TORCH_LEGACY);
    assert_eq!(r["format"], "pytorch");
    assert_eq!(r["container"], "legacy");
    assert!(r.get("prefix").is_none());
    assert_eq!(u64_of(&r, "tensor_count"), 21);
    assert_eq!(u64_of(&r, "parameter_count"), 123_712);
    assert_eq!(u64_of(&r, "total_bytes"), 494_848);
    let dtypes = r["dtypes"].as_object().unwrap();
    assert_eq!(dtypes.keys().collect::<Vec<_>>(), ["F32"]);
    assert_eq!(
        names_and_shapes(&r),
        names_and_shapes(&inspect_json(F32_FILE))
    );

    let o = weightkit(&["inspect", TORCH_LEGACY]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("PyTorch (legacy)"), "{out}");
    assert!(out.contains("494,848 bytes (483.2 KiB)"), "{out}");
}

#[test]
fn torch_directory() {
    let o = weightkit(&["inspect", TORCH_F16_DIR]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "PyTorch (zip, prefix 'pytorch_model')",
        "pytorch-bin-f16/pytorch_model.bin",
        "model type       llama",
        "LlamaForCausalLM",
        "config dtype     float16",
        "123,712",
        "247,424 bytes (241.6 KiB)",
        "storages         21 holding 247,424 bytes",
        "views            none",
        "skipped          none",
        "STORAGE",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    assert!(
        !out.lines().any(|l| l.ends_with(' ')),
        "trailing spaces:\n{out}"
    );
    let r = inspect_json(TORCH_F16_DIR);
    assert_eq!(r["format"], "pytorch");
    assert!(r["path"].as_str().unwrap().ends_with("pytorch_model.bin"));
    assert_eq!(r["config"]["model_type"], "llama");

    let legacy_dir = Path::new(TORCH_LEGACY).parent().unwrap();
    let r = inspect_json(legacy_dir.to_str().unwrap());
    assert_eq!(r["container"], "legacy");
    assert_eq!(u64_of(&r, "parameter_count"), 123_712);
}

#[test]
fn torch_views() {
    let r = inspect_json(VIEWS);
    assert_eq!(r["format"], "pytorch");
    assert_eq!(r["prefix"], "views");
    assert_eq!(u64_of(&r, "tensor_count"), 20);
    assert_eq!(u64_of(&r, "storage_count"), 12);
    let t = tensor_json(&r, "transposed");
    assert_eq!(t["shape"], serde_json::json!([6, 4]));
    assert_eq!(t["stride"], serde_json::json!([1, 6]));
    assert_eq!(t["contiguous"], false);
    assert_eq!(t["storage"], tensor_json(&r, "base")["storage"]);
    let base = tensor_json(&r, "base");
    assert_eq!(base["contiguous"], true);
    assert_eq!(base["storage_offset"], 0);
    let row = tensor_json(&r, "row_slice");
    assert_eq!(row["contiguous"], true);
    assert_eq!(row["storage_offset"], 6);
    let f16_view = tensor_json(&r, "f16_view");
    assert_eq!(f16_view["storage_offset"], 11);
    assert_eq!(f16_view["contiguous"], false);
    assert_eq!(
        tensor_json(&r, "expanded")["stride"],
        serde_json::json!([0, 1])
    );
    assert_eq!(tensor_json(&r, "scalar")["shape"], serde_json::json!([]));
    assert_eq!(tensor_json(&r, "empty")["bytes"], 0);
    // The legacy copy describes the same tensors the same way.
    let legacy = inspect_json(VIEWS_LEGACY);
    assert_eq!(legacy["container"], "legacy");
    assert_eq!(legacy["storage_count"], 12);
    for (a, b) in r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .zip(legacy["tensors"].as_array().unwrap())
    {
        for key in [
            "name",
            "dtype",
            "shape",
            "bytes",
            "stride",
            "storage_offset",
            "contiguous",
        ] {
            assert_eq!(a[key], b[key], "{} {key}", a["name"]);
        }
    }

    let o = weightkit(&["inspect", VIEWS]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "PyTorch (zip, prefix 'views')",
        "storages         12 holding 483 bytes",
        "views            9 (8 non-contiguous, 1 contiguous at a storage offset)",
        "shared storages  12 tensors share 4 storages",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    let row = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{out}"))
    };
    assert!(row("transposed").ends_with("view (stride [1, 6])"), "{out}");
    assert!(row("row_slice").ends_with("view (offset 6)"), "{out}");
    assert!(
        row("f16_view").ends_with("view (offset 11, stride [8, 1])"),
        "{out}"
    );
    assert!(!row("base").contains("view"), "{out}");
    assert!(
        !out.lines().any(|l| l.ends_with(' ')),
        "trailing spaces:\n{out}"
    );
}

/// Two shards written with `TorchWriter` from the f16 fixture's tensors, and
/// their index; returns the directory's tensors.
fn sharded_torch_dir(dir: &Path) -> Vec<(weightkit_core::TensorInfo, Vec<u8>)> {
    let tensors = f16_tensors();
    let (a, b) = tensors.split_at(9);
    let names = [
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
    ];
    write_torch(&dir.join(names[0]), a);
    write_torch(&dir.join(names[1]), b);
    let mut map = serde_json::Map::new();
    for (part, name) in [(a, names[0]), (b, names[1])] {
        for (info, _) in part {
            map.insert(info.name.clone(), Value::from(name));
        }
    }
    let index = serde_json::json!({
        "metadata": {"total_size": 247_424},
        "weight_map": map,
    });
    std::fs::write(
        dir.join("pytorch_model.bin.index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        Path::new(TORCH_F16_DIR).join("config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    tensors
}

#[test]
fn torch_sharded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    sharded_torch_dir(dir);
    // Also a single-file checkpoint: the index is preferred.
    std::fs::copy(TORCH_F16, dir.join("pytorch_model.bin")).unwrap();

    let r = inspect_json(dir.to_str().unwrap());
    assert_eq!(r["format"], "pytorch-sharded");
    assert_eq!(r["container"], "zip");
    assert_eq!(r["prefix"], "archive");
    assert_eq!(r["shards"].as_array().map(Vec::len), Some(2));
    assert_eq!(u64_of(&r, "tensor_count"), 21);
    assert_eq!(u64_of(&r, "parameter_count"), 123_712);
    assert_eq!(u64_of(&r, "total_bytes"), 247_424);
    assert_eq!(u64_of(&r, "declared_total_size"), 247_424);
    assert_eq!(u64_of(&r, "storage_count"), 21);
    assert_eq!(r["metadata"]["total_size"], 247_424);
    assert_eq!(r["config"]["model_type"], "llama");
    let single = inspect_json(TORCH_F16);
    assert_eq!(names_and_shapes(&r), names_and_shapes(&single));
    let tensors = r["tensors"].as_array().unwrap();
    assert_eq!(tensors[0]["shard"], "pytorch_model-00001-of-00002.bin");
    assert_eq!(tensors[20]["shard"], "pytorch_model-00002-of-00002.bin");
    // Both shards have a storage `0`: distinct storages all the same.
    assert_eq!(tensors[0]["storage"], tensors[9]["storage"]);

    // The index file itself gives the same answer as its directory.
    let index = dir.join("pytorch_model.bin.index.json");
    let r2 = inspect_json(index.to_str().unwrap());
    assert_eq!(r2["tensors"], r["tensors"]);

    let o = weightkit(&["inspect", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "PyTorch (sharded, 2 shards; zip, prefix 'archive')",
        "matches the data size",
        "pytorch_model-00002-of-00002.bin  12 tensors",
        "shared storages   none",
        "2:0",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
}

#[test]
fn torch_sharded_index_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    sharded_torch_dir(dir);
    let index_path = dir.join("pytorch_model.bin.index.json");
    let index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let with_map = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut index = index.clone();
        edit(index["weight_map"].as_object_mut().unwrap());
        std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        inspect_error(dir)
    };
    let err = with_map(&|m| {
        m.insert(
            "lm_head.bias".into(),
            "pytorch_model-00001-of-00002.bin".into(),
        );
    });
    assert!(err.contains("`lm_head.bias`"), "{err}");
    assert!(err.contains("not in that file"), "{err}");
    let err = with_map(&|m| {
        m.remove("lm_head.weight");
    });
    assert!(err.contains("`lm_head.weight`"), "{err}");
    assert!(err.contains("not in the weight map"), "{err}");
    for bad in [
        "../pytorch_model-00001-of-00002.bin",
        "sub/x.bin",
        "/etc/passwd",
    ] {
        let err = with_map(&|m| {
            m.insert("lm_head.weight".into(), bad.into());
        });
        assert!(err.contains("not a plain file name"), "{err}");
    }
    let err = with_map(&|m| {
        m.insert("lm_head.weight".into(), "missing.bin".into());
    });
    assert!(err.contains("missing.bin"), "{err}");
    std::fs::write(&index_path, b"{\"weight_map\": 3}").unwrap();
    let err = inspect_error(dir);
    assert!(err.contains("invalid shard index"), "{err}");
}

#[test]
fn torch_malicious_zip() {
    let pkl = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.pt");
    std::fs::write(&path, torch_zip(pkl, &[])).unwrap();
    let err = inspect_error(&path);
    assert!(err.contains("os.system"), "{err}");
    assert!(err.contains("archive/data.pkl"), "{err}");
    // As a directory's pytorch_model.bin, and with --json: the same error.
    std::fs::rename(&path, dir.path().join("pytorch_model.bin")).unwrap();
    let err = inspect_error(dir.path());
    assert!(err.contains("os.system"), "{err}");
    let o = weightkit(&["inspect", dir.path().to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
}

#[test]
fn torch_malicious_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(MALICIOUS_PICKLES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pkl"))
        .collect();
    files.sort();
    assert!(files.len() > 10);
    // The globals the VM must name (Python 2 names as Python 3 maps them).
    let globals = [
        ("01-", "os.system"),
        ("02-", "posix.system"),
        ("03-", "subprocess.Popen"),
        ("04-", "builtins.eval"),
        ("05-", "builtins.exec"),
        ("06-", "builtins.getattr"),
        ("07-", "builtins.eval"),
        ("08-", "nt.system"),
        ("09-", "os.path.exists"),
        ("12-", "subprocess.Popen"),
        ("29-", "builtins.eval"),
        ("57-", "copyreg._reconstructor"),
        ("58-", "torch.storage._load_from_bytes"),
    ];
    for file in files {
        let pkl = std::fs::read(&file).unwrap();
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        // Bare (a legacy pickle, or whatever its bytes look like) ...
        let bare = dir.path().join(format!("{stem}.pt"));
        std::fs::write(&bare, &pkl).unwrap();
        let err = inspect_error(&bare);
        assert!(err.contains("as PyTorch"), "{stem}: {err}");
        // ... and as a zip checkpoint's data.pkl, which is always unpickled.
        let zipped = dir.path().join(format!("{stem}.zip.pt"));
        std::fs::write(&zipped, torch_zip(&pkl, &[])).unwrap();
        let err = inspect_error(&zipped);
        assert!(err.contains("as PyTorch"), "{stem}: {err}");
        if let Some((_, global)) = globals.iter().find(|(p, _)| stem.starts_with(p)) {
            assert!(
                err.contains(&format!("global `{global}` is not allowed")),
                "{stem}: {err}"
            );
        }
    }
}

#[test]
fn torch_truncated() {
    let dir = tempfile::tempdir().unwrap();
    for source in [TORCH_F16, TORCH_LEGACY] {
        let bytes = std::fs::read(source).unwrap();
        for len in [bytes.len() / 2, bytes.len() - 1, 100, 20] {
            let path = dir.path().join(format!("cut-{len}.bin"));
            std::fs::write(&path, &bytes[..len]).unwrap();
            let err = inspect_error(&path);
            assert!(err.contains("as PyTorch"), "{len}: {err}");
        }
    }
}

/// A zip checkpoint of the f16 fixture's tensors nested in the pickle:
/// `wrap` gets the `{name: tensor}` dict's pickle opcodes (no protocol
/// header, no STOP) and returns the root object's.
fn nested_torch(path: &Path, wrap: impl Fn(&[u8]) -> Vec<u8>) {
    let tensors = f16_tensors();
    let infos: Vec<_> = tensors.iter().map(|(i, _)| i.clone()).collect();
    let pkl = weightkit_pickle::data_pkl(&infos).unwrap();
    let body = &pkl[2..pkl.len() - 1];
    let mut root = b"\x80\x02".to_vec();
    root.extend(wrap(body));
    root.push(b'.');
    let storages: Vec<&[u8]> = tensors.iter().map(|(_, d)| d.as_slice()).collect();
    std::fs::write(path, torch_zip(&root, &storages)).unwrap();
}

#[test]
fn torch_state_dict_option() {
    let dir = tempfile::tempdir().unwrap();
    // {"a": {"b": {tensors}}, "epoch": 3}
    let deep = dir.path().join("deep.pt");
    nested_torch(&deep, |body| {
        let mut p = b"}".to_vec();
        p.extend(pickle_str("a"));
        p.push(b'}');
        p.extend(pickle_str("b"));
        p.extend_from_slice(body);
        p.extend(b"ss");
        p.extend(pickle_str("epoch"));
        p.extend(b"K\x03s");
        p
    });
    let deep = deep.to_str().unwrap();
    // Found nowhere by default: no tensors, two skipped entries.
    let r = inspect_json(deep);
    assert_eq!(u64_of(&r, "tensor_count"), 0);
    assert_eq!(r["skipped"], serde_json::json!(["a", "epoch"]));
    let (r, _) = inspect_json_text(deep, &["--state-dict", "a.b"]);
    assert_eq!(u64_of(&r, "tensor_count"), 21);
    assert_eq!(u64_of(&r, "parameter_count"), 123_712);
    assert_eq!(r["skipped"], serde_json::json!([]));
    let (r, _) = inspect_json_text(deep, &["--state-dict", "root"]);
    assert_eq!(r["skipped"], serde_json::json!(["a", "epoch"]));
    let (r, _) = inspect_json_text(deep, &["--state-dict", "a"]);
    assert_eq!(r["skipped"], serde_json::json!(["b"]));
    let o = weightkit(&["inspect", deep, "--state-dict", "a.nope"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("`nope`") && err.contains("a.nope"), "{err}");
    let o = weightkit(&["inspect", deep, "--state-dict", "epoch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a dict"), "{}", stderr(&o));

    // {"state_dict": {tensors, "_step": 7}, "epoch": 3}: found by default.
    let ckpt = dir.path().join("ckpt.pt");
    nested_torch(&ckpt, |body| {
        let mut p = b"}".to_vec();
        p.extend(pickle_str("state_dict"));
        p.extend_from_slice(body);
        p.extend(pickle_str("_step"));
        p.extend(b"K\x07s");
        p.push(b's');
        p.extend(pickle_str("epoch"));
        p.extend(b"K\x03s");
        p
    });
    let r = inspect_json(ckpt.to_str().unwrap());
    assert_eq!(u64_of(&r, "tensor_count"), 21);
    assert_eq!(r["skipped"], serde_json::json!(["_step"]));
    let o = weightkit(&["inspect", ckpt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("skipped          1 non-tensor entry: _step"),
        "{}",
        stdout(&o)
    );

    // Other formats have no state dict to pick.
    let o = weightkit(&["inspect", F32_FILE, "--state-dict", "model"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("--state-dict applies to PyTorch"), "{err}");
}

#[test]
fn torch_directory_candidates() {
    let dir = tempfile::tempdir().unwrap();
    // A training checkpoint directory: which file is the model?
    std::fs::copy(VIEWS, dir.path().join("optimizer.pt")).unwrap();
    std::fs::copy(VIEWS, dir.path().join("scheduler.pt")).unwrap();
    let err = inspect_error(dir.path());
    assert!(err.contains("2 PyTorch checkpoints"), "{err}");
    assert!(err.contains("optimizer.pt, scheduler.pt"), "{err}");
    // pytorch_model.bin is.
    std::fs::copy(TORCH_F16, dir.path().join("pytorch_model.bin")).unwrap();
    let r = inspect_json(dir.path().to_str().unwrap());
    assert_eq!(u64_of(&r, "tensor_count"), 21);
    // One other checkpoint alone is read, whatever its name.
    let one = dir.path().join("one");
    std::fs::create_dir(&one).unwrap();
    std::fs::copy(VIEWS, one.join("weights.pth")).unwrap();
    let r = inspect_json(one.to_str().unwrap());
    assert_eq!(u64_of(&r, "tensor_count"), 20);
}

// ---------------------------------------------------------------------------
// convert and quantize

const TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/tiny-llama/safetensors-f32"
);
const IMATRIX_GGUF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/imatrix/imatrix.gguf"
);
const IMATRIX_DAT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/imatrix/imatrix.dat"
);

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Runs `weightkit ARGS`, checks success and that nothing went to stderr
/// (the progress spinner hides itself when stderr is not a terminal);
/// returns stdout.
fn weightkit_ok(args: &[&str]) -> String {
    let o = weightkit(args);
    assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
    assert_eq!(stderr(&o), "", "{args:?} wrote to stderr");
    stdout(&o)
}

/// Runs `weightkit ARGS`, checks exit code 1, empty stdout and a one-line
/// `error:` message; returns it.
fn weightkit_err(args: &[&str]) -> String {
    let o = weightkit(args);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

/// Every tensor of a checkpoint: name -> (dtype, shape, bytes).
fn tensor_bytes(path: &Path) -> std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let m = weightkit_io::open(path).unwrap();
    let src = m.source();
    src.tensor_infos()
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let t = src.load(i).unwrap();
            (
                info.name.clone(),
                (
                    info.dtype.to_string(),
                    info.shape.dims().to_vec(),
                    t.view().data().to_vec(),
                ),
            )
        })
        .collect()
}

/// name -> dtype in a `--json` report.
fn dtypes_by_name(r: &Value) -> std::collections::BTreeMap<String, String> {
    r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["dtype"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A copy of the f32 tiny llama directory (tests that could write into
/// their input work on a copy, never on testdata).
fn tiny_copy(dir: &Path) -> PathBuf {
    let to = dir.join("tiny");
    std::fs::create_dir(&to).unwrap();
    for entry in std::fs::read_dir(TINY).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
    to
}

#[test]
fn convert_hf_to_gguf_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("x.gguf");
    let out = weightkit_ok(&["convert", TINY, path_str(&gguf)]);
    assert!(out.starts_with("converted "), "{out}");
    assert!(out.contains("(safetensors) -> "), "{out}");
    assert!(out.contains("(GGUF)"), "{out}");
    assert!(out.contains("tensors  21\n"), "{out}");
    assert!(out.contains("Hugging Face -> GGUF"), "{out}");
    assert!(
        out.contains("494,848 bytes (483.2 KiB) -> 494,848 bytes (483.2 KiB)"),
        "{out}"
    );
    assert!(out.contains("time "), "{out}");

    let r = inspect_json(path_str(&gguf));
    assert_eq!(r["format"], "gguf");
    assert_eq!(r["metadata"]["general.architecture"], "llama");
    assert_eq!(r["metadata"]["general.name"], "safetensors-f32");
    assert_eq!(r["metadata"]["general.file_type"], 0);
    assert_eq!(r["metadata"]["llama.block_count"], 2);
    assert_eq!(u64_of(&r, "tensor_count"), 21);
    assert_eq!(u64_of(&r, "parameter_count"), 123_712);
    let names = dtypes_by_name(&r);
    assert!(names.contains_key("token_embd.weight"));
    assert!(names.contains_key("output.weight"));
    assert!(names.contains_key("blk.1.ffn_down.weight"));
    assert!(
        names.keys().all(|n| n.starts_with("blk.")
            || matches!(
                n.as_str(),
                "token_embd.weight" | "output.weight" | "output_norm.weight"
            )),
        "{names:?}"
    );
    assert_eq!(names.keys().filter(|n| n.starts_with("blk.")).count(), 18);

    // GGUF -> Hugging Face directory (no extension): the original names,
    // values and a config.json.
    let hf = dir.path().join("hf");
    let out = weightkit_ok(&["convert", path_str(&gguf), path_str(&hf)]);
    assert!(out.contains("GGUF -> Hugging Face"), "{out}");
    assert!(out.contains("config.json"), "{out}");
    assert!(hf.join("config.json").is_file());
    assert!(hf.join("model.safetensors").is_file());
    let r = inspect_json(path_str(&hf));
    assert_eq!(r["config"]["model_type"], "llama");
    assert_eq!(u64_of(&r, "tensor_count"), 21);
    let names = dtypes_by_name(&r);
    assert!(names.contains_key("model.embed_tokens.weight"));
    assert!(names.contains_key("model.layers.0.self_attn.q_proj.weight"));
    assert!(names.contains_key("lm_head.weight"));
    assert!(!names.keys().any(|n| n.starts_with("blk.")));
    // The round trip is the identity (the rope permutation undone).
    assert_eq!(tensor_bytes(&hf), tensor_bytes(Path::new(TINY)));
}

#[test]
fn convert_to_pytorch_f16_matches_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("model.bin");
    let out = weightkit_ok(&["convert", TINY, path_str(&bin), "--dtype", "f16"]);
    assert!(out.contains("(PyTorch)"), "{out}");
    assert!(out.contains("floats cast to F16"), "{out}");
    assert!(
        out.contains("494,848 bytes (483.2 KiB) -> 247,424 bytes (241.6 KiB)"),
        "{out}"
    );
    let ours = inspect_json(path_str(&bin));
    let fixture = inspect_json(TORCH_F16);
    assert_eq!(ours["format"], "pytorch");
    assert_eq!(ours["dtypes"], fixture["dtypes"]);
    assert_eq!(names_and_shapes(&ours), names_and_shapes(&fixture));
    assert_eq!(dtypes_by_name(&ours), dtypes_by_name(&fixture));
    // torch's .half() rounds to nearest even, and so does the cast.
    assert_eq!(tensor_bytes(&bin), tensor_bytes(Path::new(TORCH_F16)));
}

#[test]
fn convert_options() {
    let dir = tempfile::tempdir().unwrap();
    // --name reaches general.name.
    let gguf = dir.path().join("named.gguf");
    weightkit_ok(&["convert", TINY, path_str(&gguf), "--name", "Tiny Llama"]);
    assert_eq!(
        inspect_json(path_str(&gguf))["metadata"]["general.name"],
        "Tiny Llama"
    );
    // --keep-names writes the Hugging Face names into GGUF.
    let kept = dir.path().join("kept.gguf");
    let out = weightkit_ok(&["convert", TINY, path_str(&kept), "--keep-names"]);
    assert!(out.contains("names and layout kept"), "{out}");
    let names = dtypes_by_name(&inspect_json(path_str(&kept)));
    assert!(names.contains_key("model.embed_tokens.weight"), "{names:?}");
    // --max-shard-size shards a directory output.
    let sharded = dir.path().join("sharded");
    let out = weightkit_ok(&[
        "convert",
        TINY,
        path_str(&sharded),
        "--max-shard-size",
        "100KB",
        "--dtype",
        "bf16",
    ]);
    assert!(out.contains("model.safetensors.index.json"), "{out}");
    let r = inspect_json(path_str(&sharded));
    assert_eq!(r["format"], "safetensors-sharded");
    assert!(r["shards"].as_array().unwrap().len() > 1);
    assert_eq!(u64_of(&r["dtypes"]["BF16"], "count"), 21);
    assert_eq!(
        tensor_bytes(&sharded).keys().collect::<Vec<_>>(),
        tensor_bytes(Path::new(TINY)).keys().collect::<Vec<_>>()
    );
    // --to overrides the extension.
    let st = dir.path().join("weights.data");
    weightkit_ok(&["convert", TINY, path_str(&st), "--to", "gguf"]);
    assert_eq!(inspect_json(path_str(&st))["format"], "gguf");

    // Options that do not apply, and names that say no format.
    let err = weightkit_err(&[
        "convert",
        TINY,
        path_str(&dir.path().join("y.gguf")),
        "--max-shard-size",
        "5GB",
    ]);
    assert!(
        err.contains("--max-shard-size applies to a safetensors directory"),
        "{err}"
    );
    let err = weightkit_err(&[
        "convert",
        path_str(&gguf),
        path_str(&dir.path().join("z")),
        "--name",
        "x",
    ]);
    assert!(
        err.contains("--name applies to Hugging Face -> GGUF"),
        "{err}"
    );
    let err = weightkit_err(&["convert", TINY, path_str(&dir.path().join("m.onnx"))]);
    assert!(err.contains("`.onnx`"), "{err}");
    assert!(err.contains("--to"), "{err}");
    assert!(!dir.path().join("m.onnx").exists());
    // A bad size is a usage error.
    let o = weightkit(&["convert", TINY, "x", "--max-shard-size", "5XB"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown unit"), "{}", stderr(&o));
    // A missing input names the path.
    let err = weightkit_err(&["convert", "/nonexistent/in", path_str(&gguf)]);
    assert!(err.contains("/nonexistent/in"), "{err}");
}

#[test]
fn quantize_q4_k_m() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q4.gguf");
    let out = weightkit_ok(&["quantize", TINY, path_str(&q), "Q4_K_M"]);
    assert!(out.starts_with("quantized "), "{out}");
    assert!(out.contains("as Q4_K_M (general.file_type 15)"), "{out}");
    assert!(out.contains("tensors  21 ("), "{out}");
    assert!(
        out.contains("bits per weight (123,712 parameters)"),
        "{out}"
    );
    assert!(out.contains("x smaller"), "{out}");
    let r = inspect_json(path_str(&q));
    assert_eq!(r["metadata"]["general.file_type"], 15);
    assert_eq!(r["metadata"]["general.quantization_version"], 2);
    assert_eq!(r["metadata"]["general.architecture"], "llama");
    assert_eq!(r["file_type"]["name"], "Q4_K_M");
    let types = dtypes_by_name(&r);
    assert_eq!(types.len(), 21);
    for (name, ty) in &types {
        if name.contains("norm") {
            assert_eq!(ty, "F32", "{name}");
        }
    }
    // Rows of 64 are no whole Q4_K / Q6_K block: llama.cpp's fallbacks
    // (Q4_K -> Q5_0, Q6_K -> Q8_0; rows of 172 fit neither, F16).
    assert_eq!(types["blk.0.attn_q.weight"], "Q5_0");
    assert_eq!(types["blk.0.ffn_down.weight"], "F16");
    assert_eq!(types["output.weight"], "Q8_0");
    // The summary's per-type counts agree with the file.
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for ty in types.values() {
        *counts.entry(ty).or_default() += 1;
    }
    for (ty, n) in counts {
        assert!(out.contains(&format!("{n} {ty}")), "{ty}: {out}");
    }
}

#[test]
fn quantize_q8_0_needs_an_override_for_ffn_down() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q8.gguf");
    // ffn_down rows have 172 elements, not a multiple of 32, and Q8_0 has
    // no fallback type: llama-quantize fails, and so do we.
    let err = weightkit_err(&["quantize", TINY, path_str(&q), "Q8_0"]);
    assert!(err.contains("ffn_down"), "{err}");
    assert!(err.contains("no fallback type"), "{err}");
    assert!(err.contains("--override"), "{err}");
    assert!(!q.exists());

    let out = weightkit_ok(&[
        "quantize",
        TINY,
        path_str(&q),
        "q8_0",
        "--override",
        "ffn_down=f16",
        "--threads",
        "1",
    ]);
    assert!(out.contains("as Q8_0 (general.file_type 7)"), "{out}");
    assert!(out.contains("on 1 thread\n"), "{out}");
    let r = inspect_json(path_str(&q));
    assert_eq!(r["metadata"]["general.file_type"], 7);
    assert_eq!(r["metadata"]["general.quantization_version"], 2);
    let types = dtypes_by_name(&r);
    for (name, ty) in &types {
        let expected = if name.contains("norm") {
            "F32"
        } else if name.contains("ffn_down") {
            "F16"
        } else {
            "Q8_0"
        };
        assert_eq!(ty, expected, "{name}");
    }

    // A GGUF input (identity plan) quantizes to the same tensors as the
    // Hugging Face directory it came from.
    let f32_gguf = dir.path().join("f32.gguf");
    weightkit_ok(&["convert", TINY, path_str(&f32_gguf)]);
    let q2 = dir.path().join("q8-from-gguf.gguf");
    weightkit_ok(&[
        "quantize",
        path_str(&f32_gguf),
        path_str(&q2),
        "Q8_0",
        "--tensor-type",
        "ffn_down=f16",
    ]);
    assert_eq!(tensor_bytes(&q2), tensor_bytes(&q));
    // Requantizing needs the flag.
    let q3 = dir.path().join("q4-from-q8.gguf");
    let err = weightkit_err(&["quantize", path_str(&q), path_str(&q3), "Q4_K_M"]);
    assert!(err.contains("--allow-requantize"), "{err}");
    weightkit_ok(&[
        "quantize",
        path_str(&q),
        path_str(&q3),
        "Q4_K_M",
        "--allow-requantize",
    ]);
    assert_eq!(
        inspect_json(path_str(&q3))["metadata"]["general.file_type"],
        15
    );
}

#[test]
fn quantize_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q.gguf");
    // A bad TYPE lists the mixtures (clap usage error, exit 2).
    let o = weightkit(&["quantize", TINY, path_str(&q), "Q9_K"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("unknown quantization mixture `Q9_K`"), "{err}");
    for m in [
        "Q4_K_M", "Q8_0", "IQ4_XS", "Q2_K_S", "TQ2_0", "Q1_0", "Q2_0",
    ] {
        assert!(err.contains(m), "{m}: {err}");
    }
    let o = weightkit(&[
        "quantize",
        TINY,
        path_str(&q),
        "Q8_0",
        "--override",
        "ffn_down",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected NAME=TYPE"), "{}", stderr(&o));
    let o = weightkit(&["quantize", TINY, path_str(&q), "Q8_0", "--override", "x=q9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown ggml type"), "{}", stderr(&o));
    let o = weightkit(&["quantize", TINY, path_str(&q), "Q8_0", "--threads", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!q.exists());
    // The ftype number and aliases work.
    let out = weightkit_ok(&["quantize", TINY, path_str(&q), "15"]);
    assert!(out.contains("as Q4_K_M"), "{out}");
    let out = weightkit_ok(&["quantize", TINY, path_str(&q), "q4_k"]);
    assert!(out.contains("as Q4_K_M"), "{out}");
}

#[test]
fn refuses_to_overwrite_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = tiny_copy(dir.path());
    let gguf = dir.path().join("x.gguf");
    weightkit_ok(&["convert", path_str(&tiny), path_str(&gguf)]);
    let before = std::fs::read(&gguf).unwrap();

    let err = weightkit_err(&["quantize", path_str(&gguf), path_str(&gguf), "Q4_K_M"]);
    assert!(err.contains("refusing to write"), "{err}");
    assert!(err.contains("it is the input"), "{err}");
    // Another spelling of the same path.
    let other = dir.path().join(".").join("x.gguf");
    let err = weightkit_err(&["convert", path_str(&gguf), path_str(&other), "--to", "gguf"]);
    assert!(err.contains("refusing to write"), "{err}");
    #[cfg(unix)]
    {
        let link = dir.path().join("link.gguf");
        std::os::unix::fs::symlink(&gguf, &link).unwrap();
        let err = weightkit_err(&["quantize", path_str(&gguf), path_str(&link), "Q8_0"]);
        assert!(err.contains("refusing to write"), "{err}");
    }
    assert_eq!(std::fs::read(&gguf).unwrap(), before);

    // A file the input directory is read from.
    let shard = tiny.join("model.safetensors");
    let st_before = std::fs::read(&shard).unwrap();
    let err = weightkit_err(&["convert", path_str(&tiny), path_str(&shard)]);
    assert!(err.contains("is part of the input"), "{err}");
    let err = weightkit_err(&[
        "quantize",
        path_str(&tiny),
        path_str(&tiny.join("config.json")),
        "Q4_K_M",
    ]);
    assert!(err.contains("is part of the input"), "{err}");
    // A directory output into the input's own directory.
    let err = weightkit_err(&["convert", path_str(&tiny), path_str(&tiny)]);
    assert!(err.contains("it is the input"), "{err}");
    let err = weightkit_err(&[
        "convert",
        path_str(&shard),
        path_str(&tiny),
        "--dtype",
        "f16",
    ]);
    assert!(err.contains("directory of the input"), "{err}");
    assert_eq!(std::fs::read(&shard).unwrap(), st_before);

    // Writing a new file next to the input is fine.
    weightkit_ok(&[
        "quantize",
        path_str(&tiny),
        path_str(&tiny.join("model-Q4_K_M.gguf")),
        "Q4_K_M",
    ]);
}

/// A legacy (`.dat`) importance matrix with one entry per `(name, n_cols)`.
fn legacy_imatrix(entries: &[(&str, usize)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&i32::try_from(entries.len()).unwrap().to_le_bytes());
    for (k, (name, n)) in entries.iter().enumerate() {
        b.extend_from_slice(&i32::try_from(name.len()).unwrap().to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&1i32.to_le_bytes()); // ncall
        b.extend_from_slice(&i32::try_from(*n).unwrap().to_le_bytes());
        for i in 0..*n {
            // Far from uniform, so that it changes the rounding.
            let v = if (i + k) % 5 == 0 { 50.0f32 } else { 0.01 };
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    b
}

#[test]
fn quantize_with_an_importance_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q.gguf");
    // The fixtures were computed for a model with 256-column weights; the
    // tiny llama's have 64 (or 172). llama-quantize refuses a size mismatch
    // (only token_embd.weight is exempt), and so do we.
    for imatrix in [IMATRIX_GGUF, IMATRIX_DAT] {
        let err = weightkit_err(&[
            "quantize",
            TINY,
            path_str(&q),
            "Q4_K_M",
            "--imatrix",
            imatrix,
        ]);
        assert!(err.contains("cannot quantize"), "{err}");
        assert!(err.contains("importance vector of `"), "{err}");
        assert!(err.contains("has 256 values, the tensor needs 64"), "{err}");
        assert!(err.contains("made for this model"), "{err}");
        assert!(!q.exists());
    }
    let err = weightkit_err(&[
        "quantize",
        TINY,
        path_str(&q),
        "Q4_K_M",
        "--imatrix",
        "/nonexistent.dat",
    ]);
    assert!(err.contains("cannot read /nonexistent.dat"), "{err}");
    let junk = dir.path().join("junk.dat");
    std::fs::write(&junk, [1, 0, 0]).unwrap();
    let err = weightkit_err(&[
        "quantize",
        TINY,
        path_str(&q),
        "Q4_K_M",
        "--imatrix",
        path_str(&junk),
    ]);
    assert!(err.contains("cannot read the importance matrix"), "{err}");

    // A matrix that fits: the weights it covers quantize differently.
    let fitting = dir.path().join("fits.dat");
    std::fs::write(
        &fitting,
        legacy_imatrix(&[
            ("blk.0.attn_q.weight", 64),
            ("blk.0.attn_k.weight", 64),
            ("blk.1.ffn_gate.weight", 64),
        ]),
    )
    .unwrap();
    let plain = dir.path().join("plain.gguf");
    weightkit_ok(&["quantize", TINY, path_str(&plain), "Q4_K_M"]);
    let out = weightkit_ok(&[
        "quantize",
        TINY,
        path_str(&q),
        "Q4_K_M",
        "--imatrix",
        path_str(&fitting),
    ]);
    assert!(
        out.contains("entries for 3 tensors of the model (3 in the file)"),
        "{out}"
    );
    let (with, without) = (tensor_bytes(&q), tensor_bytes(&plain));
    for (name, (ty, _, bytes)) in &with {
        let covered = matches!(
            name.as_str(),
            "blk.0.attn_q.weight" | "blk.0.attn_k.weight" | "blk.1.ffn_gate.weight"
        );
        assert_eq!(ty, &without[name].0, "{name}");
        assert_eq!(bytes != &without[name].2, covered, "{name}");
    }

    // Entries under other names change nothing, with a warning.
    let foreign = dir.path().join("foreign.dat");
    std::fs::write(
        &foreign,
        legacy_imatrix(&[("model.layers.0.self_attn.q_proj.weight", 64)]),
    )
    .unwrap();
    let o = weightkit(&[
        "quantize",
        TINY,
        path_str(&q),
        "Q4_K_M",
        "--imatrix",
        path_str(&foreign),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("warning: the importance matrix"), "{err}");
    assert!(err.contains("no entry for any tensor"), "{err}");
    assert!(
        stdout(&o).contains("entries for 0 tensors"),
        "{}",
        stdout(&o)
    );
    assert_eq!(tensor_bytes(&q), tensor_bytes(&plain));
}

// ---- merge, unmerge, adapter inspect (PEFT 0.21.2 fixtures) ----

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn lora_dir(name: &str) -> String {
    format!("{ROOT}/testdata/lora/{name}")
}

const LLAMA_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/tiny-llama/safetensors-f32"
);

/// Every tensor of a checkpoint (any format) as (name, f32 values).
fn f32_tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let model = weightkit_io::open(path).unwrap();
    let s = model.source();
    s.tensor_infos()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = s.load(i).unwrap().view().to_f32_vec().unwrap();
            (t.name.clone(), v)
        })
        .collect()
}

/// Max difference relative to each reference tensor's largest magnitude;
/// the two must hold the same names in the same order.
fn max_rel_diff(ours: &Path, reference: &Path) -> f32 {
    let (a, b) = (f32_tensors(ours), f32_tensors(reference));
    assert_eq!(
        a.len(),
        b.len(),
        "{} vs {}",
        ours.display(),
        reference.display()
    );
    let mut rel = 0f32;
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(va.len(), vb.len(), "{na}");
        let scale = vb
            .iter()
            .fold(0f32, |m, x| m.max(x.abs()))
            .max(f32::MIN_POSITIVE);
        for (x, y) in va.iter().zip(vb) {
            rel = rel.max((x - y).abs() / scale);
        }
    }
    rel
}

fn run_ok(args: &[&str]) -> String {
    let o = weightkit(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

/// Runs a command that must fail with exit code 1 and one `error:` line.
fn run_err(args: &[&str]) -> String {
    let o = weightkit(args);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn merge_matches_peft_in_every_output_format() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, base) in [
        ("basic", LLAMA_DIR.to_owned()),
        ("rank-pattern", LLAMA_DIR.to_owned()),
        ("dora", LLAMA_DIR.to_owned()),
        ("gpt2-bias-all", format!("{ROOT}/testdata/gpt2-base")),
    ] {
        let reference = PathBuf::from(lora_dir(name)).join("merged_reference.safetensors");
        for ext in ["safetensors", "gguf", "pt"] {
            let out = tmp.path().join(format!("{name}.{ext}"));
            let text = run_ok(&[
                "merge",
                &base,
                &lora_dir(name),
                "--safe-merge",
                "-o",
                path_str(&out),
            ]);
            assert!(text.starts_with("merged 1 adapter into "), "{text}");
            let rel = max_rel_diff(&out, &reference);
            assert!(rel <= 1e-6, "{name} as {ext}: relative difference {rel:e}");
        }
    }
    // --to (alias --format) overrides the extension.
    let out = tmp.path().join("merged.bin");
    run_ok(&[
        "merge",
        LLAMA_DIR,
        &lora_dir("basic"),
        "--format",
        "gguf",
        "-o",
        path_str(&out),
    ]);
    assert_eq!(std::fs::read(&out).unwrap()[..4], *b"GGUF");
}

#[test]
fn merge_several_adapters_in_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let basic = lora_dir("basic");
    let reference = PathBuf::from(&basic).join("merged_reference.safetensors");
    let base = PathBuf::from(LLAMA_DIR).join("model.safetensors");
    // Half the adapter twice is the adapter once (PEFT's merge).
    let out = tmp.path().join("halves.safetensors");
    let text = run_ok(&[
        "merge",
        LLAMA_DIR,
        &basic,
        &basic,
        "--weights",
        "0.5,0.5",
        "-o",
        path_str(&out),
    ]);
    assert!(text.contains("merged 2 adapters"), "{text}");
    assert!(max_rel_diff(&out, &reference) <= 1e-6);
    // The adapter and its negation cancel: the base again.
    let out = tmp.path().join("cancel.safetensors");
    run_ok(&[
        "merge",
        LLAMA_DIR,
        &basic,
        &basic,
        "--weights=1,-1",
        "-o",
        path_str(&out),
    ]);
    assert!(max_rel_diff(&out, &base) <= 1e-6);
    // --scale 2 with weights 0.25,0.25 is the adapter once.
    let out = tmp.path().join("scaled.safetensors");
    run_ok(&[
        "merge",
        LLAMA_DIR,
        &basic,
        &basic,
        "--weights",
        "0.25,0.25",
        "--scale",
        "2",
        "-o",
        path_str(&out),
    ]);
    assert!(max_rel_diff(&out, &reference) <= 1e-6);
    // Scale 0 leaves every tensor's bytes as they were.
    let out = tmp.path().join("zero.safetensors");
    run_ok(&[
        "merge",
        LLAMA_DIR,
        &basic,
        "--scale",
        "0",
        "-o",
        path_str(&out),
    ]);
    let (a, b) = (f32_tensors(&out), f32_tensors(&base));
    assert_eq!(a, b);
}

#[test]
fn unmerge_recovers_the_base_from_peft_merged_weights() {
    let tmp = tempfile::tempdir().unwrap();
    // PEFT rounded W + delta to f32 and so do we after subtracting: two
    // roundings of the merged magnitude, which for rsLoRA's larger scaling
    // (alpha / sqrt(r)) reaches ~1.2e-6 of the base's largest value.
    for (name, tolerance) in [("basic", 1e-6), ("rank-pattern", 1e-6), ("rslora", 2e-6)] {
        let merged = PathBuf::from(lora_dir(name)).join("merged_reference.safetensors");
        let out = tmp.path().join(format!("{name}.safetensors"));
        let text = run_ok(&[
            "unmerge",
            path_str(&merged),
            &lora_dir(name),
            "-o",
            path_str(&out),
        ]);
        assert!(text.starts_with("unmerged "), "{text}");
        let base = PathBuf::from(LLAMA_DIR).join("model.safetensors");
        let rel = max_rel_diff(&out, &base);
        assert!(rel <= tolerance, "{name}: relative difference {rel:e}");
    }
    // DoRA cannot be unmerged; nothing is written.
    let merged = PathBuf::from(lora_dir("dora")).join("merged_reference.safetensors");
    let out = tmp.path().join("dora.safetensors");
    let err = run_err(&[
        "unmerge",
        path_str(&merged),
        &lora_dir("dora"),
        "-o",
        path_str(&out),
    ]);
    assert!(err.contains("DoRA"), "{err}");
    assert!(!out.exists());
}

#[test]
fn merge_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let o = path_str(&out);
    // Not an adapter directory.
    let err = run_err(&[
        "merge",
        LLAMA_DIR,
        &format!("{ROOT}/testdata/lora"),
        "-o",
        o,
    ]);
    assert!(err.contains("adapter_config.json"), "{err}");
    // An adapter whose config PEFT type we do not merge.
    let bad = tmp.path().join("ia3");
    std::fs::create_dir(&bad).unwrap();
    let basic = PathBuf::from(lora_dir("basic"));
    let config = std::fs::read_to_string(basic.join("adapter_config.json")).unwrap();
    std::fs::write(
        bad.join("adapter_config.json"),
        config.replace("\"LORA\"", "\"IA3\""),
    )
    .unwrap();
    std::fs::copy(
        basic.join("adapter_model.safetensors"),
        bad.join("adapter_model.safetensors"),
    )
    .unwrap();
    let err = run_err(&["merge", LLAMA_DIR, path_str(&bad), "-o", o]);
    assert!(err.contains("IA3"), "{err}");
    // A base without the adapted modules.
    let err = run_err(&[
        "merge",
        &format!("{ROOT}/testdata/gpt2-base"),
        &lora_dir("basic"),
        "-o",
        o,
    ]);
    assert!(err.contains("model.layers.0.mlp.down_proj.weight"), "{err}");
    // One weight per adapter.
    let err = run_err(&[
        "merge",
        LLAMA_DIR,
        &lora_dir("basic"),
        "--weights",
        "1,2",
        "-o",
        o,
    ]);
    assert!(
        err.contains("--weights has 2 values for 1 adapter"),
        "{err}"
    );
    // One output file, never the input.
    let err = run_err(&[
        "merge",
        LLAMA_DIR,
        &lora_dir("basic"),
        "-o",
        path_str(tmp.path()),
    ]);
    assert!(err.contains("one file"), "{err}");
    let input = PathBuf::from(LLAMA_DIR).join("model.safetensors");
    let err = run_err(&[
        "merge",
        LLAMA_DIR,
        &lora_dir("basic"),
        "-o",
        path_str(&input),
    ]);
    assert!(err.contains("refusing"), "{err}");
    assert!(!out.exists());
    // ties needs a density; an unknown method is a usage error.
    let err = run_err(&[
        "merge",
        LLAMA_DIR,
        &lora_dir("basic"),
        &lora_dir("combine/second"),
        "--method",
        "ties",
        "-o",
        o,
    ]);
    assert!(err.contains("density"), "{err}");
    let o2 = weightkit(&[
        "merge",
        LLAMA_DIR,
        &lora_dir("basic"),
        "--method",
        "average",
        "-o",
        o,
    ]);
    assert_eq!(o2.status.code(), Some(2));
    assert!(!out.exists());
}

#[test]
fn merge_with_a_combination_method() {
    let tmp = tempfile::tempdir().unwrap();
    // cat is exact: the same as merging both adapters in turn.
    let cat = tmp.path().join("cat.safetensors");
    let text = run_ok(&[
        "merge",
        LLAMA_DIR,
        &lora_dir("basic"),
        &lora_dir("rslora"),
        "--weights",
        "0.6,1.3",
        "--method",
        "cat",
        "-o",
        path_str(&cat),
    ]);
    assert!(text.contains("combined cat -> rank 12"), "{text}");
    let seq = tmp.path().join("seq.safetensors");
    run_ok(&[
        "merge",
        LLAMA_DIR,
        &lora_dir("basic"),
        &lora_dir("rslora"),
        "--weights",
        "0.6,1.3",
        "-o",
        path_str(&seq),
    ]);
    let rel = max_rel_diff(&cat, &seq);
    assert!(rel <= 1e-6, "cat vs in turn: {rel:e}");
    // svd: the same as merging PEFT's svd combination (testdata/lora/combine).
    let svd = tmp.path().join("svd.safetensors");
    run_ok(&[
        "merge",
        LLAMA_DIR,
        &lora_dir("basic"),
        &lora_dir("combine/second"),
        "--weights",
        "1,0.5",
        "--method",
        "svd",
        "--svd-rank",
        "6",
        "-o",
        path_str(&svd),
    ]);
    let peft = tmp.path().join("peft-svd.safetensors");
    run_ok(&[
        "merge",
        LLAMA_DIR,
        &lora_dir("combine/svd"),
        "-o",
        path_str(&peft),
    ]);
    let rel = max_rel_diff(&svd, &peft);
    assert!(rel <= 1e-5, "svd vs PEFT's: {rel:e}");
    // Combination options without --method would be ignored: refused.
    let err = run_err(&[
        "merge",
        LLAMA_DIR,
        &lora_dir("basic"),
        "--density",
        "0.5",
        "-o",
        path_str(&tmp.path().join("x.safetensors")),
    ]);
    assert!(err.contains("--method"), "{err}");
}

#[test]
fn adapter_combine_saves_peft_combinations() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("linear");
    let text = run_ok(&[
        "adapter",
        "combine",
        &lora_dir("basic"),
        &lora_dir("combine/second"),
        "--weights",
        "0.7,-0.4",
        "--method",
        "linear",
        "-o",
        path_str(&out),
    ]);
    assert!(
        text.starts_with("combined 2 adapters with linear -> "),
        "{text}"
    );
    assert!(text.contains("r           8 (lora_alpha 8)"), "{text}");
    let peft = PathBuf::from(lora_dir("combine/linear")).join("adapter_model.safetensors");
    let rel = max_rel_diff(&out.join("adapter_model.safetensors"), &peft);
    assert!(rel <= 1e-5, "{rel:e}");
    // The saved directory is an adapter `merge` takes.
    let merged = tmp.path().join("merged.safetensors");
    run_ok(&["merge", LLAMA_DIR, path_str(&out), "-o", path_str(&merged)]);
    // ties with PEFT's masks.
    let ties = tmp.path().join("ties");
    run_ok(&[
        "adapter",
        "combine",
        &lora_dir("basic"),
        &lora_dir("combine/second"),
        "--weights=0.7,0.5",
        "--method=ties",
        "--density=0.3",
        "--majority-sign-method=frequency",
        "-o",
        path_str(&ties),
    ]);
    let peft = PathBuf::from(lora_dir("combine/ties_frequency")).join("adapter_model.safetensors");
    assert!(max_rel_diff(&ties.join("adapter_model.safetensors"), &peft) <= 1e-5);
    // DARE is seeded: the same seed, the same file.
    let files: Vec<Vec<u8>> = ["d1", "d2"]
        .iter()
        .map(|n| {
            let d = tmp.path().join(n);
            run_ok(&[
                "adapter",
                "combine",
                &lora_dir("basic"),
                &lora_dir("combine/second"),
                "--method",
                "dare_ties",
                "--density",
                "0.5",
                "--seed",
                "3",
                "-o",
                path_str(&d),
            ]);
            std::fs::read(d.join("adapter_model.safetensors")).unwrap()
        })
        .collect();
    assert_eq!(files[0], files[1]);
    // Errors: no method, ranks that differ, a density out of range.
    let never = tmp.path().join("never");
    let o = path_str(&never);
    let err = run_err(&["adapter", "combine", &lora_dir("basic"), "-o", o]);
    assert!(err.contains("--method"), "{err}");
    let err = run_err(&[
        "adapter",
        "combine",
        &lora_dir("basic"),
        &lora_dir("rslora"),
        "--method",
        "linear",
        "-o",
        o,
    ]);
    assert!(err.contains("equal rank"), "{err}");
    let err = run_err(&[
        "adapter",
        "combine",
        &lora_dir("basic"),
        &lora_dir("combine/second"),
        "--method",
        "magnitude_prune",
        "--density",
        "1.5",
        "-o",
        o,
    ]);
    assert!(err.contains("outside (0, 1]"), "{err}");
    assert!(!tmp.path().join("never").exists());
}

#[test]
fn adapter_extract_prints_errors_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let finetuned = PathBuf::from(lora_dir("basic")).join("merged_reference.safetensors");
    let out = tmp.path().join("extracted");
    let text = run_ok(&[
        "adapter",
        "extract",
        LLAMA_DIR,
        path_str(&finetuned),
        "--rank",
        "8",
        "-o",
        path_str(&out),
    ]);
    assert!(text.starts_with("extracted 14 modules -> "), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("rel_error")).collect();
    assert_eq!(lines.len(), 14, "{text}");
    for l in &lines {
        let e: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(e < 1e-5, "{l}");
    }
    // Merged back into the base: PEFT's merged checkpoint.
    let merged = tmp.path().join("merged.safetensors");
    run_ok(&["merge", LLAMA_DIR, path_str(&out), "-o", path_str(&merged)]);
    assert!(max_rel_diff(&merged, &finetuned) <= 1e-6);
    // By energy.
    let energy = tmp.path().join("energy");
    let text = run_ok(&[
        "adapter",
        "extract",
        LLAMA_DIR,
        path_str(&finetuned),
        "--energy",
        "0.5",
        "-o",
        path_str(&energy),
    ]);
    assert!(text.contains("energy 0."), "{text}");
    let json = run_ok(&["adapter", "inspect", path_str(&energy), "--json"]);
    assert!(json.contains("\"scaling\": 1.0"), "{json}");
    // Errors.
    let never = tmp.path().join("never");
    let o = path_str(&never);
    let e = weightkit(&[
        "adapter",
        "extract",
        LLAMA_DIR,
        path_str(&finetuned),
        "--rank",
        "2",
        "--energy",
        "0.5",
        "-o",
        o,
    ]);
    assert_eq!(e.status.code(), Some(2));
    let err = run_err(&[
        "adapter",
        "extract",
        LLAMA_DIR,
        path_str(&finetuned),
        "--rank",
        "40",
        "-o",
        o,
    ]);
    assert!(
        err.contains("k_proj") && err.contains("outside 1..=32"),
        "{err}"
    );
    let err = run_err(&[
        "adapter",
        "extract",
        LLAMA_DIR,
        &format!("{ROOT}/testdata/gpt2-base"),
        "--rank",
        "2",
        "-o",
        o,
    ]);
    assert!(err.contains("fine-tuned checkpoint has no tensor"), "{err}");
    assert!(!tmp.path().join("never").exists());
}

/// (tensor count, parameter count, lora_A rows by module) from the
/// adapter file's own safetensors header.
fn adapter_header(name: &str) -> (usize, u64, Vec<(String, u64)>) {
    let bytes =
        std::fs::read(PathBuf::from(lora_dir(name)).join("adapter_model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut count = 0;
    let mut params = 0;
    let mut ranks = Vec::new();
    for (k, v) in header.as_object().unwrap() {
        if k == "__metadata__" {
            continue;
        }
        count += 1;
        let shape: Vec<u64> = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        params += shape.iter().product::<u64>();
        if let Some(m) = k.strip_suffix(".lora_A.weight") {
            let m = m.strip_prefix("base_model.model.").unwrap();
            ranks.push((m.to_owned(), shape[0]));
        }
    }
    ranks.sort();
    (count, params, ranks)
}

#[test]
fn adapter_inspect_json() {
    for name in ["basic", "rank-pattern", "dora", "gpt2-bias-all"] {
        let r: Value =
            serde_json::from_str(&run_ok(&["adapter", "inspect", &lora_dir(name), "--json"]))
                .unwrap();
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(PathBuf::from(lora_dir(name)).join("adapter_config.json"))
                .unwrap(),
        )
        .unwrap();
        let (count, params, ranks) = adapter_header(name);
        assert_eq!(r["tensor_count"], count, "{name}");
        assert_eq!(r["parameter_count"], params, "{name}");
        for key in ["peft_type", "r", "use_rslora", "use_dora", "target_modules"] {
            assert_eq!(r[key], config[key], "{name}: {key}");
        }
        assert_eq!(r["lora_alpha"].as_f64(), config["lora_alpha"].as_f64());
        let modules = r["modules"].as_array().unwrap();
        let got: Vec<(String, u64)> = modules
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_owned(),
                    m["rank"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, ranks, "{name}");
        assert!(modules.iter().all(|m| m["dora"] == config["use_dora"]));
    }
    // rank_pattern / alpha_pattern resolved as PEFT does (see the fixture's
    // config): layer 0 q_proj has r=2 and alpha 4, layer 1 v_proj r=12.
    let r: Value = serde_json::from_str(&run_ok(&[
        "adapter",
        "inspect",
        &lora_dir("rank-pattern"),
        "--json",
    ]))
    .unwrap();
    let module = |m: &str| {
        r["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == m)
            .unwrap()
            .clone()
    };
    let q0 = module("model.layers.0.self_attn.q_proj");
    assert_eq!(
        (q0["rank"].as_u64(), q0["scaling"].as_f64()),
        (Some(2), Some(2.0))
    );
    assert_eq!(module("model.layers.1.self_attn.v_proj")["rank"], 12);
    let k1 = module("model.layers.1.self_attn.k_proj");
    assert_eq!(k1["alpha"].as_f64(), Some(32.0));
    assert_eq!(k1["scaling"].as_f64(), Some(4.0));
}

#[test]
fn adapter_inspect_human_and_errors() {
    let text = run_ok(&["adapter", "inspect", &lora_dir("dora")]);
    assert!(text.contains("  dora             yes"), "{text}");
    assert!(text.contains("  tensors          42"), "{text}");
    let (_, params, _) = adapter_header("dora");
    let expected = format!("  parameters       {}", {
        let s = params.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    });
    assert!(text.contains(&expected), "{text}");
    assert!(text.contains("model.layers.0.self_attn.q_proj"), "{text}");
    let err = run_err(&["adapter", "inspect", &format!("{ROOT}/testdata/tiny-llama")]);
    assert!(err.contains("adapter_config.json"), "{err}");
}

// ---- adapter export-gguf / import-gguf (llama.cpp's convert_lora_to_gguf.py fixtures) ----

/// The tensor data section of a GGUF file (everything after the header).
fn gguf_data(path: &Path) -> Vec<u8> {
    let f = weightkit_gguf::GgufFile::open(path).unwrap();
    f.bytes()[f.header().data_offset()..].to_vec()
}

#[test]
fn adapter_export_gguf_matches_llama_cpp_converter() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf_dir = PathBuf::from(format!("{ROOT}/testdata/lora/gguf"));
    // --base as a directory and as its config.json; f32 and q8_0 as
    // convert_lora_to_gguf.py's --outtype.
    for (base, outtype) in [
        (LLAMA_DIR.to_owned(), "f32"),
        (format!("{LLAMA_DIR}/config.json"), "q8_0"),
    ] {
        let out = tmp.path().join(format!("basic-{outtype}.gguf"));
        let text = run_ok(&[
            "adapter",
            "export-gguf",
            &lora_dir("basic"),
            "--base",
            &base,
            "-o",
            path_str(&out),
            "--outtype",
            outtype,
        ]);
        assert!(
            text.starts_with(&format!(
                "wrote {} (14 modules, 28 tensors, {outtype}, alpha 16)",
                out.display()
            )),
            "{text}"
        );
        let theirs = gguf_dir.join(format!("basic-{outtype}.gguf"));
        assert!(gguf_data(&out) == gguf_data(&theirs), "{outtype}");
        let ours = weightkit_gguf::GgufFile::open(&out).unwrap();
        let reference = weightkit_gguf::GgufFile::open(&theirs).unwrap();
        assert_eq!(ours.tensors(), reference.tensors());
        for key in [
            "general.architecture",
            "general.type",
            "adapter.type",
            "adapter.lora.alpha",
        ] {
            assert_eq!(ours.get(key), reference.get(key), "{key}");
        }
    }
    // rsLoRA: PEFT's scaling 8 / sqrt(4) = 4 is llama.cpp's 8 / 4 times 2.
    let out = tmp.path().join("rslora.gguf");
    let text = run_ok(&[
        "adapter",
        "export-gguf",
        &lora_dir("rslora"),
        "--base",
        LLAMA_DIR,
        "-o",
        path_str(&out),
    ]);
    assert!(text.contains("lora_b carries the ratio"), "{text}");
    assert!(
        text.contains("blk.0.attn_q.weight  rank 4  scaling 4  lora_b x 2"),
        "{text}"
    );
}

#[test]
fn adapter_import_gguf_then_merge_matches_peft() {
    // llama.cpp's own files, imported and merged, give PEFT's merged model.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged.safetensors");
    let reference = PathBuf::from(lora_dir("basic")).join("merged_reference.safetensors");
    // Q8_0 (and F16 fallback) factors carry their rounding into the delta.
    for (outtype, tol) in [("f32", 1e-6), ("q8_0", 1e-2)] {
        let dir = tmp.path().join(format!("imported-{outtype}"));
        let text = run_ok(&[
            "adapter",
            "import-gguf",
            &format!("{ROOT}/testdata/lora/gguf/basic-{outtype}.gguf"),
            "--base",
            LLAMA_DIR,
            "-o",
            path_str(&dir),
        ]);
        assert!(text.contains("(14 modules, r 8, lora_alpha 16)"), "{text}");
        run_ok(&["merge", LLAMA_DIR, path_str(&dir), "-o", path_str(&out)]);
        let rel = max_rel_diff(&out, &reference);
        assert!(rel <= tol, "{outtype}: relative difference {rel:e}");
    }
    // Exported by us, imported back, merged: PEFT's merge to f32 rounding.
    let gguf = tmp.path().join("rank-pattern.gguf");
    run_ok(&[
        "adapter",
        "export-gguf",
        &lora_dir("rank-pattern"),
        "--base",
        LLAMA_DIR,
        "-o",
        path_str(&gguf),
    ]);
    let dir = tmp.path().join("rank-pattern");
    let text = run_ok(&[
        "adapter",
        "import-gguf",
        path_str(&gguf),
        "--base",
        LLAMA_DIR,
        "-o",
        path_str(&dir),
    ]);
    assert!(text.contains("rank_pattern entries"), "{text}");
    run_ok(&["merge", LLAMA_DIR, path_str(&dir), "-o", path_str(&out)]);
    let reference = PathBuf::from(lora_dir("rank-pattern")).join("merged_reference.safetensors");
    let rel = max_rel_diff(&out, &reference);
    assert!(rel <= 1e-6, "relative difference {rel:e}");
}

#[test]
fn adapter_gguf_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.gguf");
    // DoRA has no llama.cpp equivalent; the error names the tensor.
    let err = run_err(&[
        "adapter",
        "export-gguf",
        &lora_dir("dora"),
        "--base",
        LLAMA_DIR,
        "-o",
        path_str(&out),
    ]);
    assert!(
        err.contains("lora_magnitude_vector") && err.contains("DoRA"),
        "{err}"
    );
    assert!(!out.exists());
    // An architecture without tables.
    let err = run_err(&[
        "adapter",
        "export-gguf",
        &lora_dir("gpt2-fan-in-fan-out"),
        "--base",
        &format!("{ROOT}/testdata/gpt2-base"),
        "-o",
        path_str(&out),
    ]);
    assert!(
        err.contains("unsupported architecture \"GPT2LMHeadModel\""),
        "{err}"
    );
    // q/k factors cannot be un-permuted without the head counts.
    let err = run_err(&[
        "adapter",
        "import-gguf",
        &format!("{ROOT}/testdata/lora/gguf/basic-f32.gguf"),
        "-o",
        path_str(&tmp.path().join("a")),
    ]);
    assert!(
        err.contains("rope-permuted") && err.contains("--base"),
        "{err}"
    );
    // Not an adapter.
    let err = run_err(&[
        "adapter",
        "import-gguf",
        &format!("{GGUF_DIR}/{}", first_gguf_fixture()),
        "--base",
        LLAMA_DIR,
        "-o",
        path_str(&tmp.path().join("b")),
    ]);
    assert!(err.contains("general.type"), "{err}");
}

/// A GGUF model file from testdata/gguf (not an adapter).
fn first_gguf_fixture() -> String {
    let mut names: Vec<String> = std::fs::read_dir(GGUF_DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gguf"))
        .collect();
    names.sort();
    names.remove(0)
}

#[test]
fn merge_into_a_quantized_llama_cpp_gguf() {
    // The tiny Llama converted to GGUF (llama.cpp names, q/k permuted) and
    // quantized to Q8_0 (ffn_down's 172-wide rows as F16): `merge` finds the
    // adapter's tensors through the name tables, requantizes each merged
    // tensor to its own type and prints its error.
    let tmp = tempfile::tempdir().unwrap();
    let f32_gguf = tmp.path().join("base-f32.gguf");
    let q8 = tmp.path().join("base-q8_0.gguf");
    run_ok(&["convert", LLAMA_DIR, path_str(&f32_gguf)]);
    run_ok(&[
        "quantize",
        path_str(&f32_gguf),
        path_str(&q8),
        "q8_0",
        "--override",
        "ffn_down=f16",
    ]);
    let out = tmp.path().join("merged.gguf");
    let text = run_ok(&[
        "merge",
        path_str(&q8),
        &lora_dir("basic"),
        "-o",
        path_str(&out),
    ]);
    assert!(text.contains("(gguf, llama.cpp names)"), "{text}");
    assert!(text.contains("merged   14 tensors"), "{text}");
    assert!(
        text.contains("blk.0.attn_q.weight") && text.contains("Q8_0 -> Q8_0"),
        "{text}"
    );
    // Same tensor names, types and shapes as the base.
    assert_eq!(
        inspect_json(path_str(&q8))["tensors"],
        inspect_json(path_str(&out))["tensors"]
    );
    // Through an f32 llama.cpp-named base the values are exact: back in
    // Hugging Face names and order (`convert`), PEFT's merge within 1e-6.
    let out_f32 = tmp.path().join("merged-f32.gguf");
    run_ok(&[
        "merge",
        path_str(&f32_gguf),
        &lora_dir("basic"),
        "-o",
        path_str(&out_f32),
    ]);
    let hf = tmp.path().join("merged-hf.safetensors");
    run_ok(&["convert", path_str(&out_f32), path_str(&hf)]);
    let reference = PathBuf::from(lora_dir("basic")).join("merged_reference.safetensors");
    let rel = max_rel_diff(&hf, &reference);
    assert!(rel <= 1e-6, "relative difference {rel:e}");
    // --requant picks another type; one whose blocks do not divide a merged
    // tensor's rows is refused before anything is written.
    let out2 = tmp.path().join("merged-f16.gguf");
    let text = run_ok(&[
        "merge",
        path_str(&q8),
        &lora_dir("basic"),
        "--requant",
        "f16",
        "-o",
        path_str(&out2),
    ]);
    assert!(text.contains("Q8_0 -> F16"), "{text}");
    let bad = tmp.path().join("bad.gguf");
    let o = weightkit(&[
        "merge",
        path_str(&q8),
        &lora_dir("basic"),
        "--requant",
        "q4_K",
        "-o",
        path_str(&bad),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("ffn_down"), "{}", stderr(&o));
    assert!(!bad.exists());
    // A llama.cpp-named GGUF base writes GGUF only.
    let o = weightkit(&[
        "merge",
        path_str(&q8),
        &lora_dir("basic"),
        "-o",
        path_str(&tmp.path().join("x.safetensors")),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("llama.cpp's tensor names"),
        "{}",
        stderr(&o)
    );
}

// ---- export ----

/// The tensors of two GGUF files, byte for byte, and their tensor lists.
fn same_gguf_tensors(a: &Path, b: &Path) {
    let x = weightkit_gguf::GgufFile::open(a).unwrap();
    let y = weightkit_gguf::GgufFile::open(b).unwrap();
    assert_eq!(x.tensors(), y.tensors());
    for i in 0..x.tensors().len() {
        use weightkit_core::TensorSource;
        assert_eq!(
            x.load(i).unwrap().view().data(),
            y.load(i).unwrap().view().data(),
            "{}",
            x.tensors()[i].name
        );
    }
}

/// What export replaces, as two commands: `merge LLAMA_DIR MERGE_ARGS` into
/// a model directory (with the base's config.json), then `quantize` it with
/// `QUANTIZE_ARGS` and `--name tiny`; the GGUF's path.
fn merge_then_quantize(tmp: &Path, merge_args: &[&str], quantize_args: &[&str]) -> PathBuf {
    let merged = tmp.join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    std::fs::copy(
        format!("{LLAMA_DIR}/config.json"),
        merged.join("config.json"),
    )
    .unwrap();
    let model = merged.join("model.safetensors");
    let mut args = vec!["merge", LLAMA_DIR];
    args.extend_from_slice(merge_args);
    args.extend(["-o", path_str(&model)]);
    run_ok(&args);
    let out = tmp.join("two-step.gguf");
    let mut args = vec!["quantize", path_str(&merged), path_str(&out)];
    args.extend_from_slice(quantize_args);
    args.extend(["--name", "tiny"]);
    run_ok(&args);
    out
}

#[test]
fn export_is_merge_then_quantize_in_one_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let basic = lora_dir("basic");
    // Two half-weight adapters, weights paired by position.
    let ours = tmp.path().join("ours.gguf");
    let text = run_ok(&[
        "export",
        LLAMA_DIR,
        "--adapter",
        &basic,
        "--adapter-weight",
        "0.5",
        "--adapter",
        &basic,
        "--adapter-weight",
        "0.5",
        "--quant",
        "q8_0",
        "--override",
        "ffn_down=f16",
        "--name",
        "tiny",
        "-o",
        path_str(&ours),
    ]);
    assert!(text.contains("+ 2 adapters ->"), "{text}");
    assert!(text.contains("(weight 0.5)"), "{text}");
    assert!(text.contains("  merged   14 tensors"), "{text}");
    assert!(text.contains("  memory   "), "{text}");
    // The same through the two commands (merge writes the f32 base's f32,
    // which is what export quantizes).
    let two_step = merge_then_quantize(
        tmp.path(),
        &[&basic, &basic, "--weights", "0.5,0.5"],
        &["q8_0", "--override", "ffn_down=f16"],
    );
    same_gguf_tensors(&ours, &two_step);
    // bits per weight as printed = bytes written * 8 / parameters.
    let bpw: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("bpw"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let file = weightkit_gguf::GgufFile::open(&ours).unwrap();
    let (mut bytes, mut params) = (0usize, 0usize);
    for t in file.tensors() {
        bytes += t.byte_len().unwrap();
        params += t.elem_count().unwrap();
    }
    assert!(
        (bpw - bytes as f64 * 8.0 / params as f64).abs() < 0.006,
        "{bpw}"
    );
}

#[test]
fn export_to_a_hugging_face_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged");
    let text = run_ok(&[
        "export",
        LLAMA_DIR,
        "--adapter",
        &lora_dir("basic"),
        "--format",
        "safetensors",
        "-o",
        path_str(&out),
    ]);
    assert!(text.contains("as safetensors"), "{text}");
    assert!(out.join("config.json").is_file());
    // PEFT's merge.
    let reference = PathBuf::from(lora_dir("basic")).join("merged_reference.safetensors");
    let rel = max_rel_diff(&out.join("model.safetensors"), &reference);
    assert!(rel <= 1e-6, "relative difference {rel:e}");
}

#[test]
fn export_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let basic = lora_dir("basic");
    let o = path_str(&out);
    // Q8_0 has no fallback for 172-wide rows: the hint names --override.
    let err = weightkit_err(&[
        "export",
        LLAMA_DIR,
        "--adapter",
        &basic,
        "--quant",
        "q8_0",
        "-o",
        o,
    ]);
    assert!(err.contains("cannot export"), "{err}");
    assert!(err.contains("--override"), "{err}");
    assert!(!out.exists());
    for (args, says) in [
        (vec!["--adapter", basic.as_str(), "-o", o], "needs --quant"),
        (
            vec![
                "--adapter-weight",
                "2",
                "--adapter",
                basic.as_str(),
                "--quant",
                "q4_k_m",
                "-o",
                o,
            ],
            "must follow the --adapter",
        ),
        (
            vec![
                "--adapter",
                basic.as_str(),
                "--quant",
                "q4_k_m",
                "--format",
                "safetensors",
                "-o",
                o,
            ],
            "--quant applies to GGUF output",
        ),
        (
            vec!["--adapter", "/nonexistent", "--quant", "q4_k_m", "-o", o],
            "cannot load adapter /nonexistent",
        ),
    ] {
        let mut full = vec!["export", LLAMA_DIR];
        full.extend(args);
        let err = weightkit_err(&full);
        assert!(err.contains(says), "{full:?}: {err}");
        assert!(!out.exists());
    }
    // An adapter for another model: named, nothing written.
    let err = weightkit_err(&[
        "export",
        LLAMA_DIR,
        "--adapter",
        &lora_dir("gpt2-fan-in-fan-out"),
        "--quant",
        "q4_k_m",
        "-o",
        o,
    ]);
    assert!(err.contains("transformer.h.0"), "{err}");
    assert!(!out.exists());
}

// ---- demo ----

/// A number printed by the demo: the first token of `line` after `label`.
fn demo_number(text: &str, line_start: &str, label: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(line_start))
        .unwrap_or_else(|| panic!("no line starting with {line_start}:\n{text}"));
    let rest = &line[line
        .find(label)
        .unwrap_or_else(|| panic!("{label} in {line}"))
        + label.len()..];
    let token = rest.split_whitespace().next().unwrap();
    token
        .trim_end_matches('%')
        .replace(',', "")
        .parse()
        .unwrap()
}

/// llama.cpp's q/k row order (convert_hf_to_gguf.py's `permute`): GGUF row
/// `h*d + 2*i + j` holds Hugging Face row `h*d + j*d/2 + i`.
fn gguf_row_to_hf(row: usize, rows: usize, heads: usize) -> usize {
    let d = rows / heads;
    let (h, rest) = (row / d, row % d);
    let (i, j) = (rest / 2, rest % 2);
    h * d + j * (d / 2) + i
}

#[test]
fn demo_prints_what_its_files_hold() {
    use weightkit_core::TensorSource;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let text = run_ok(&["demo", "--out", path_str(&dir)]);
    for step in [
        "1. base model",
        "2. LoRA adapter",
        "3. export Q8_0",
        "4. export Q4_K_M",
    ] {
        assert!(text.contains(step), "{text}");
    }
    // Sizes and bits per weight are the files'.
    for name in [
        "model/model.safetensors",
        "adapter/adapter_model.safetensors",
        "merged-Q8_0.gguf",
        "merged-Q4_K_M.gguf",
    ] {
        let printed = demo_number(&text, name, name);
        let len = std::fs::metadata(dir.join(name)).unwrap().len();
        assert_eq!(printed as u64, len, "{name}");
    }
    // The model and adapter, read with the safetensors crate's own parser
    // (not weightkit's), and the merge computed here in f64.
    let model_bytes = std::fs::read(dir.join("model/model.safetensors")).unwrap();
    let model = safetensors::SafeTensors::deserialize(&model_bytes).unwrap();
    let adapter_bytes = std::fs::read(dir.join("adapter/adapter_model.safetensors")).unwrap();
    let adapter = safetensors::SafeTensors::deserialize(&adapter_bytes).unwrap();
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.join("adapter/adapter_config.json")).unwrap())
            .unwrap();
    let scaling = config["lora_alpha"].as_f64().unwrap() / config["r"].as_f64().unwrap();
    let f32s = |t: &safetensors::tensor::TensorView<'_>| -> Vec<f32> {
        match t.dtype() {
            safetensors::Dtype::BF16 => t
                .data()
                .chunks_exact(2)
                .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
                .collect(),
            safetensors::Dtype::F32 => t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            d => panic!("{d:?}"),
        }
    };
    let merged = |hf: &str| -> Vec<f64> {
        let w = model.tensor(hf).unwrap();
        let cols = w.shape()[1];
        let mut v: Vec<f64> = f32s(&w).iter().map(|&x| f64::from(x)).collect();
        let module = hf.trim_end_matches(".weight");
        if let (Ok(a), Ok(b)) = (
            adapter.tensor(&format!("base_model.model.{module}.lora_A.weight")),
            adapter.tensor(&format!("base_model.model.{module}.lora_B.weight")),
        ) {
            let (a, b, r) = (f32s(&a), f32s(&b), a.shape()[0]);
            for (i, row) in v.chunks_exact_mut(cols).enumerate() {
                for (j, x) in row.iter_mut().enumerate() {
                    let dot: f64 = (0..r)
                        .map(|k| f64::from(b[i * r + k]) * f64::from(a[k * cols + j]))
                        .sum();
                    *x += scaling * dot;
                }
            }
        }
        v
    };
    let gguf = weightkit_gguf::GgufFile::open(dir.join("merged-Q8_0.gguf")).unwrap();
    let (mut bytes, mut params) = (0usize, 0usize);
    for t in gguf.tensors() {
        bytes += t.byte_len().unwrap();
        params += t.elem_count().unwrap();
    }
    let bpw = demo_number(&text, "merged-Q8_0.gguf", "bytes");
    assert!(
        (bpw - bytes as f64 * 8.0 / params as f64).abs() < 6e-4,
        "{bpw}"
    );
    // Each Q8_0 row of the error table, recomputed from the files.
    let mut checked = 0;
    for (i, t) in gguf.tensors().iter().enumerate() {
        if t.shape.rank() != 2 {
            continue;
        }
        let hf = match t.name.as_str() {
            "token_embd.weight" => "model.embed_tokens.weight".to_owned(),
            "output.weight" => "lm_head.weight".to_owned(),
            n => {
                let mut p = n.splitn(3, '.');
                let (_, l, rest) = (p.next(), p.next().unwrap(), p.next().unwrap());
                let m = match rest {
                    "attn_q.weight" => "self_attn.q_proj",
                    "attn_k.weight" => "self_attn.k_proj",
                    "attn_v.weight" => "self_attn.v_proj",
                    "attn_output.weight" => "self_attn.o_proj",
                    "ffn_gate.weight" => "mlp.gate_proj",
                    "ffn_up.weight" => "mlp.up_proj",
                    "ffn_down.weight" => "mlp.down_proj",
                    other => panic!("{other}"),
                };
                format!("model.layers.{l}.{m}.weight")
            }
        };
        let want = merged(&hf);
        let (rows, cols) = (t.shape.dims()[0], t.shape.dims()[1]);
        let heads = if t.name.ends_with("attn_q.weight") {
            Some(4)
        } else if t.name.ends_with("attn_k.weight") {
            Some(2)
        } else {
            None
        };
        let raw = gguf.load(i).unwrap();
        let mut got = vec![0f32; rows * cols];
        weightkit_quant::dequantize(t.dtype, raw.view().data(), &mut got).unwrap();
        let (mut d2, mut n2) = (0f64, 0f64);
        for g_row in 0..rows {
            let h_row = heads.map_or(g_row, |h| gguf_row_to_hf(g_row, rows, h));
            for c in 0..cols {
                let d = f64::from(got[g_row * cols + c]) - want[h_row * cols + c];
                d2 += d * d;
                n2 += want[h_row * cols + c].powi(2);
            }
        }
        let rmse = (d2 / (rows * cols) as f64).sqrt();
        let rel = (d2 / n2).sqrt() * 100.0;
        let line_start = format!("{} ", t.name);
        let printed_rmse = demo_number(&text, &line_start, "| Q8_0");
        let printed_rel = demo_number(&text, &line_start, &format!("{printed_rmse:.4e}"));
        assert!(
            (printed_rmse - rmse).abs() <= 1e-3 * rmse,
            "{}: {printed_rmse} vs {rmse}",
            t.name
        );
        assert!(
            (printed_rel - rel).abs() <= 1e-3 * rel,
            "{}: {printed_rel} vs {rel}",
            t.name
        );
        checked += 1;
    }
    assert_eq!(checked, 44);
    // The merge is exact to f32 rounding.
    let max_diff = demo_number(&text, "max |difference|", "max |difference|");
    assert!(max_diff < 1e-7, "{max_diff}");
}

#[test]
fn export_scale_and_adapter_weight_multiply_the_same_delta() {
    // --scale s and --adapter-weight s give each module the factor s, so the
    // exports are the same bytes; unscaled, they differ.
    let tmp = tempfile::tempdir().unwrap();
    let basic = lora_dir("basic");
    let run = |extra: &[&str], name: &str| {
        let out = tmp.path().join(name);
        let mut args = vec!["export", LLAMA_DIR, "--adapter", basic.as_str()];
        args.extend_from_slice(extra);
        args.extend(["--quant", "q4_k_m", "-o", path_str(&out)]);
        let text = run_ok(&args);
        (out, text)
    };
    let (weighted, _) = run(&["--adapter-weight", "0.25"], "weighted.gguf");
    let (scaled, text) = run(&["--scale", "0.25"], "scaled.gguf");
    assert!(text.contains("  scale    0.25"), "{text}");
    same_gguf_tensors(&weighted, &scaled);
    let (full, _) = run(&[], "full.gguf");
    assert_ne!(
        std::fs::read(&full).unwrap(),
        std::fs::read(&scaled).unwrap()
    );
}

#[test]
fn export_takes_llama_cpp_gguf_adapters() {
    // llama.cpp's converter's file for `basic` (testdata/lora/gguf) merges
    // to the same bytes as the PEFT directory it came from.
    let tmp = tempfile::tempdir().unwrap();
    let run = |adapter: &str, name: &str| {
        let out = tmp.path().join(name);
        run_ok(&[
            "export",
            LLAMA_DIR,
            "--adapter",
            adapter,
            "--quant",
            "q4_k_m",
            "-o",
            path_str(&out),
        ]);
        out
    };
    let from_gguf = run(
        &format!("{ROOT}/testdata/lora/gguf/basic-f32.gguf"),
        "g.gguf",
    );
    let from_peft = run(&lora_dir("basic"), "p.gguf");
    same_gguf_tensors(&from_gguf, &from_peft);
}

/// A legacy llama-imatrix `.dat` file with an entry for every 2-D weight of
/// the tiny Llama except the embeddings (positive, uneven values, ncall 1).
fn tiny_imatrix(path: &Path) {
    let mut entries: Vec<(String, usize)> = Vec::new();
    for l in 0..2 {
        for (name, cols) in [
            ("attn_q", 64),
            ("attn_k", 64),
            ("attn_v", 64),
            ("attn_output", 64),
            ("ffn_gate", 64),
            ("ffn_up", 64),
            ("ffn_down", 172),
        ] {
            entries.push((format!("blk.{l}.{name}.weight"), cols));
        }
    }
    entries.push(("output.weight".to_owned(), 64));
    let mut b = Vec::new();
    b.extend((entries.len() as i32).to_le_bytes());
    for (name, cols) in &entries {
        b.extend((name.len() as i32).to_le_bytes());
        b.extend(name.as_bytes());
        b.extend(1i32.to_le_bytes());
        b.extend((*cols as i32).to_le_bytes());
        for i in 0..*cols {
            b.extend((0.5 + ((i * 37) % 101) as f32 / 50.0).to_le_bytes());
        }
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn export_quantizes_with_the_importance_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    let imatrix = tmp.path().join("tiny.dat");
    tiny_imatrix(&imatrix);
    let basic = lora_dir("basic");
    let with = tmp.path().join("with.gguf");
    let text = run_ok(&[
        "export",
        LLAMA_DIR,
        "--adapter",
        &basic,
        "--quant",
        "q4_k_m",
        "--imatrix",
        path_str(&imatrix),
        "--name",
        "tiny",
        "-o",
        path_str(&with),
    ]);
    assert!(text.contains("  imatrix  "), "{text}");
    assert!(text.contains("entries for 15 tensors"), "{text}");
    // The same matrix through merge, then quantize: the same bytes.
    let two_step = merge_then_quantize(
        tmp.path(),
        &[&basic],
        &["q4_k_m", "--imatrix", path_str(&imatrix)],
    );
    same_gguf_tensors(&with, &two_step);
    // And the matrix changed the result.
    let without = tmp.path().join("without.gguf");
    run_ok(&[
        "export",
        LLAMA_DIR,
        "--adapter",
        &basic,
        "--quant",
        "q4_k_m",
        "--name",
        "tiny",
        "-o",
        path_str(&without),
    ]);
    assert_ne!(
        std::fs::read(&with).unwrap(),
        std::fs::read(&without).unwrap()
    );
}
