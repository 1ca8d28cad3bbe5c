//! The pickle VM against real pickles (Python's `pickle.dumps`, protocols
//! 0-5, and hand-made Python 2 era pickles) and a corpus of hostile ones.
//!
//! Fixtures: `testdata/pickle/vm/`, written by `make_pickles.py` there.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};
use weightkit_pickle::vm::{Limits, Obj, ObjId, PickleError, Policy, Unpickled, unpickle};

fn vm_data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/pickle/vm")
        .join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(vm_data(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---------------------------------------------------------------- policies

/// Globals the Python-made benign pickles use at low protocols.
const BENIGN_GLOBALS: &[(&str, &str)] = &[
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
    ("__main__", "Point"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch", "FloatStorage"),
    // Protocols 0 and 1 rebuild instances with copyreg._reconstructor.
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
];

/// Like torch's `_get_allowed_globals` (a subset).
const TORCH_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch.nn.parameter", "Parameter"),
    ("torch", "FloatStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "LongStorage"),
    ("torch", "Size"),
    ("torch", "device"),
    ("builtins", "set"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
];

const DICT_CLASSES: &[(&str, &str)] = &[("collections", "OrderedDict")];

fn in_list(list: &[(&str, &str)], module: &str, name: &str) -> bool {
    list.iter().any(|&(m, n)| m == module && n == name)
}

fn benign_allowed(module: &str, name: &str) -> bool {
    in_list(BENIGN_GLOBALS, module, name)
}

fn torch_allowed(module: &str, name: &str) -> bool {
    in_list(TORCH_GLOBALS, module, name)
}

fn everything(_: &str, _: &str) -> bool {
    true
}

fn benign_policy() -> Policy<'static> {
    Policy::new(&benign_allowed).with_dict_classes(DICT_CLASSES)
}

fn torch_policy() -> Policy<'static> {
    Policy::new(&torch_allowed).with_dict_classes(DICT_CLASSES)
}

// ---------------------------------------------------------------- Obj graph → JSON

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn float_bits(f: f64) -> String {
    let bits = if f.is_nan() {
        0x7ff8_0000_0000_0000
    } else {
        f.to_bits()
    };
    format!("{bits:016x}")
}

fn latin1_hex(s: &str) -> String {
    let bytes: Vec<u8> = s
        .chars()
        .map(|c| u8::try_from(u32::from(c)).expect("latin-1 char"))
        .collect();
    hex(&bytes)
}

/// The tagged JSON form `make_pickles.py`'s `enc` writes; `path` holds the
/// enclosing containers, for `{"cycle": n}`.
fn to_json(u: &Unpickled, id: ObjId, path: &mut Vec<ObjId>) -> Value {
    if let Some(pos) = path.iter().rposition(|&p| p == id) {
        return json!({ "cycle": path.len() - pos });
    }
    let obj = u.get(id).expect("dangling id");
    match obj {
        Obj::None => return Value::Null,
        Obj::Bool(b) => return json!(b),
        Obj::Int(i) => return json!(i),
        Obj::BigInt(b) => return json!({ "bigint": hex(b) }),
        Obj::Float(f) => return json!({ "float": float_bits(*f) }),
        Obj::Str(s) => return json!(s),
        Obj::Bytes(b) => return json!({ "bytes": hex(b) }),
        Obj::Global { module, name } => return json!({ "global": format!("{module}.{name}") }),
        _ => {}
    }
    path.push(id);
    let all = |ids: &[ObjId], path: &mut Vec<ObjId>| -> Vec<Value> {
        ids.iter().map(|&i| to_json(u, i, path)).collect()
    };
    let value = match obj {
        Obj::List(v) => Value::Array(all(v, path)),
        Obj::Tuple(v) => json!({ "tuple": all(v, path) }),
        Obj::Set(v) => json!({ "set": all(v, path) }),
        Obj::FrozenSet(v) => json!({ "frozenset": all(v, path) }),
        Obj::Dict { items, state } => {
            let pairs: Vec<Value> = items
                .iter()
                .map(|&(k, v)| json!([to_json(u, k, path), to_json(u, v, path)]))
                .collect();
            let mut out = json!({ "dict": pairs });
            if let Some(s) = state {
                out["state"] = to_json(u, *s, path);
            }
            out
        }
        Obj::PersistentId(pid) => json!({ "persid": to_json(u, *pid, path) }),
        Obj::Call { func, args, state } => {
            let (module, name) = u.global_name(*func).expect("call of a global");
            let args = all(u.tuple_items(*args).expect("tuple args"), path);
            let state = state.map(|s| to_json(u, s, path));
            interpret_call(module, name, args, state)
        }
        other => panic!("unexpected {other:?}"),
    };
    path.pop();
    value
}

/// What Python's standard reductions of builtins mean; other calls stay
/// `{"call": ...}`.
fn interpret_call(module: &str, name: &str, args: Vec<Value>, state: Option<Value>) -> Value {
    match ((module, name), args.as_slice(), &state) {
        (("builtins", "set"), [], None) => json!({ "set": [] }),
        (("builtins", "set"), [Value::Array(a)], None) => json!({ "set": a }),
        (("builtins", "frozenset"), [], None) => json!({ "frozenset": [] }),
        (("builtins", "frozenset"), [Value::Array(a)], None) => json!({ "frozenset": a }),
        (("builtins", "bytes" | "bytearray"), [], None) => json!({ "bytes": "" }),
        (("builtins", "bytearray"), [b @ Value::Object(_)], None) => b.clone(),
        // copyreg._reconstructor(cls, object, None) is object.__new__(cls).
        (("copyreg", "_reconstructor"), [Value::Object(cls), base, Value::Null], _)
            if *base == json!({ "global": "builtins.object" }) =>
        {
            let mut out = json!({ "call": cls["global"], "args": [] });
            if let Some(s) = state {
                out["state"] = s;
            }
            out
        }
        (("builtins", "bytearray"), [Value::String(s), Value::String(_)], None)
        | (("_codecs", "encode"), [Value::String(s), Value::String(_)], None) => {
            json!({ "bytes": latin1_hex(s) })
        }
        _ => {
            let mut out = json!({ "call": format!("{module}.{name}"), "args": args });
            if let Some(s) = state {
                out["state"] = s;
            }
            out
        }
    }
}

fn root_json(u: &Unpickled) -> Value {
    to_json(u, u.root(), &mut Vec::new())
}

// ---------------------------------------------------------------- benign

struct Case {
    name: String,
    expected: Value,
    files: Vec<CaseFile>,
}

struct CaseFile {
    file: String,
    needs_globals: bool,
}

fn cases() -> Vec<Case> {
    let all: Value = serde_json::from_slice(&read("benign/expected.json")).expect("expected.json");
    let all = all.as_array().expect("a list of cases");
    all.iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_owned(),
            expected: c["expected"].clone(),
            files: c["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| CaseFile {
                    file: f["file"].as_str().unwrap().to_owned(),
                    needs_globals: f["needs_globals"].as_bool().unwrap(),
                })
                .collect(),
        })
        .collect()
}

#[test]
fn benign_pickles_match_python() {
    let limits = Limits::default();
    let mut checked = 0;
    for case in cases() {
        for f in &case.files {
            let data = read(&format!("benign/{}", f.file));
            let deny = unpickle(&data, &Policy::deny_all(), &limits);
            let u = if f.needs_globals {
                assert!(
                    matches!(deny, Err(PickleError::UnsafeGlobal { .. })),
                    "{}: {deny:?}",
                    f.file
                );
                unpickle(&data, &benign_policy(), &limits)
            } else {
                deny
            };
            let u = u.unwrap_or_else(|e| panic!("{}: {e}", f.file));
            assert_eq!(root_json(&u), case.expected, "{}", f.file);
            if case.name != "handmade-trailing_bytes" {
                assert_eq!(u.consumed(), data.len(), "{}", f.file);
            }
            checked += 1;
        }
    }
    assert!(checked >= 150, "only {checked} pickles");
}

fn load(rel: &str, policy: &Policy<'_>) -> Unpickled {
    unpickle(&read(rel), policy, &Limits::default()).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn memo_shares_objects_at_every_protocol() {
    for p in 0..=5 {
        // a = [1]; [a, a]: one list, referenced twice.
        let u = load(&format!("benign/shared-p{p}.pkl"), &Policy::deny_all());
        let items = u.list_items(u.root()).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], items[1], "p{p}");

        // l = [1]; l.append(l): the list contains itself.
        let u = load(
            &format!("benign/self_ref_list-p{p}.pkl"),
            &Policy::deny_all(),
        );
        let items = u.list_items(u.root()).unwrap();
        assert_eq!(items[1], u.root(), "p{p}");

        // d["me"] = d
        let u = load(
            &format!("benign/self_ref_dict-p{p}.pkl"),
            &Policy::deny_all(),
        );
        assert_eq!(u.dict_get_str(u.root(), "me"), Some(u.root()), "p{p}");

        // [many, many[::-1]]: the second list holds the same 300 lists.
        let u = load(&format!("benign/many_memo-p{p}.pkl"), &Policy::deny_all());
        let halves = u.list_items(u.root()).unwrap();
        let a = u.list_items(halves[0]).unwrap();
        let b = u.list_items(halves[1]).unwrap();
        assert_eq!(a.len(), 300);
        assert!(a.iter().eq(b.iter().rev()), "p{p}");
    }
}

#[test]
fn torch_style_state_dict_through_the_helpers() {
    for p in 1..=5 {
        let u = load(
            &format!("benign/torch_like_state_dict-p{p}.pkl"),
            &torch_policy(),
        );
        let root = u.root();
        let keys: Vec<&str> = u
            .dict_items(root)
            .unwrap()
            .iter()
            .map(|&(k, _)| u.as_str(k).unwrap())
            .collect();
        assert_eq!(keys, ["weight", "bias"]);
        let weight = u.dict_get_str(root, "weight").unwrap();
        let (func, args) = u.call_target(weight).unwrap();
        assert_eq!(func, ("torch._utils", "_rebuild_tensor_v2"));
        assert_eq!(args.len(), 6);
        let pid = u.persistent_id(args[0]).unwrap();
        let pid = u.tuple_items(pid).unwrap();
        assert_eq!(u.as_str(pid[0]), Some("storage"));
        assert_eq!(u.global_name(pid[1]), Some(("torch", "FloatStorage")));
        assert_eq!(u.as_str(pid[2]), Some("0"));
        assert_eq!(u.as_int(pid[4]), Some(4));
        assert_eq!(u.as_int(args[1]), Some(0));
        let shape: Vec<i64> = u
            .tuple_items(args[2])
            .unwrap()
            .iter()
            .map(|&i| u.as_int(i).unwrap())
            .collect();
        assert_eq!(shape, [2, 2]);
        assert_eq!(u.as_bool(args[4]), Some(false));
        assert_eq!(u.dict_items(args[5]).map(<[_]>::len), Some(0));
        let Some(Obj::Dict {
            state: Some(meta), ..
        }) = u.get(root)
        else {
            panic!("no _metadata state")
        };
        assert!(u.dict_get_str(*meta, "_metadata").is_some());
        // Accessors never panic on the wrong kind or a bad id.
        assert_eq!(u.as_str(weight), None);
        assert_eq!(u.tuple_items(usize::MAX), None);
        assert_eq!(u.global_name(root), None);
        assert!(u.get(u.objects().len()).is_none());
    }
}

#[test]
fn back_to_back_pickles() {
    // The legacy torch format: magic, protocol, sys info, ... in a row.
    let mut data = read("benign/nested-p2.pkl");
    let first = data.len();
    data.extend(read("benign/small_ints-p0.pkl"));
    let policy = Policy::deny_all();
    let a = unpickle(&data, &policy, &Limits::default()).unwrap();
    assert_eq!(a.consumed(), first);
    let b = unpickle(&data[a.consumed()..], &policy, &Limits::default()).unwrap();
    assert_eq!(b.consumed(), data.len() - first);
    assert_eq!(b.as_int(b.list_items(b.root()).unwrap()[3]), Some(127));
}

#[test]
fn every_truncation_is_an_error() {
    let limits = Limits::default();
    let policy = benign_policy();
    for case in cases() {
        for f in &case.files {
            let data = read(&format!("benign/{}", f.file));
            if case.name == "handmade-trailing_bytes" {
                continue;
            }
            // Every prefix of the small files, a sample of the big ones.
            let step = if data.len() <= 4096 { 1 } else { 97 };
            for cut in (0..data.len()).step_by(step) {
                match unpickle(&data[..cut], &policy, &limits) {
                    Err(
                        PickleError::Truncated { .. }
                        | PickleError::NoStop { .. }
                        | PickleError::BadFrame { .. },
                    ) => {}
                    other => panic!("{} cut at {cut}: {other:?}", f.file),
                }
            }
        }
    }
}

#[test]
fn newobj_ex_with_empty_kwargs_and_dict_classes() {
    // NEWOBJ_EX(torch.Size, (), {}) then BUILD.
    let data = b"\x80\x04ctorch\nSize\n)}\x92}b.";
    let u = unpickle(data, &torch_policy(), &Limits::default()).unwrap();
    let (func, args, state) = u.call_parts(u.root()).unwrap();
    assert_eq!(u.global_name(func), Some(("torch", "Size")));
    assert_eq!(u.tuple_items(args), Some(&[][..]));
    assert!(state.is_some());
    // NEWOBJ of a dict class with no arguments is a dict too.
    let data = b"\x80\x02ccollections\nOrderedDict\n)\x81X\x01\x00\x00\x00aK\x01s.";
    let u = unpickle(data, &torch_policy(), &Limits::default()).unwrap();
    assert_eq!(u.dict_items(u.root()).map(<[_]>::len), Some(1));
    // With arguments, Counter({'a': 1}) stays a call.
    let data = b"\x80\x02ccollections\nCounter\n}\x85R.";
    let u = unpickle(data, &torch_policy(), &Limits::default()).unwrap();
    assert_eq!(
        u.call_target(u.root()).map(|(f, a)| (f, a.len())),
        Some((("collections", "Counter"), 1))
    );
}

#[test]
fn depth_limit_counts_containers_and_ignores_cycles() {
    let nested = |n: usize| {
        let mut d = b"\x80\x02".to_vec();
        d.extend(std::iter::repeat_n(b']', n));
        d.extend(std::iter::repeat_n(b'a', n - 1));
        d.push(b'.');
        d
    };
    let limits = Limits {
        max_depth: 5,
        ..Limits::default()
    };
    let policy = Policy::deny_all();
    assert!(unpickle(&nested(5), &policy, &limits).is_ok());
    assert!(matches!(
        unpickle(&nested(6), &policy, &limits),
        Err(PickleError::TooDeep { limit: 5, .. })
    ));

    // A chain built top-down through the memo (each list is appended to its
    // parent before it gets its own child) is as deep as one built
    // bottom-up.
    let mut top_down = b"\x80\x02]r\x00\x00\x00\x00".to_vec();
    for i in 0u32..10 {
        top_down.push(b'j');
        top_down.extend(i.to_le_bytes());
        top_down.push(b']');
        top_down.push(b'r');
        top_down.extend((i + 1).to_le_bytes());
        top_down.extend(b"a0");
    }
    top_down.push(b'.');
    assert!(matches!(
        unpickle(&top_down, &policy, &limits),
        Err(PickleError::TooDeep { .. })
    ));
    let deep_enough = Limits {
        max_depth: 11,
        ..Limits::default()
    };
    assert!(unpickle(&top_down, &policy, &deep_enough).is_ok());

    // l.append(l) ten thousand times is one level, as in Python.
    let mut cyclic = b"\x80\x02]q\x00".to_vec();
    for _ in 0..10_000 {
        cyclic.extend(b"h\x00a");
    }
    cyclic.push(b'.');
    let u = unpickle(&cyclic, &policy, &limits).unwrap();
    assert_eq!(u.list_items(u.root()).map(<[_]>::len), Some(10_000));
}

#[test]
fn error_messages_say_what_and_where() {
    let e = unpickle(
        &read("malicious/01-os-system.pkl"),
        &torch_policy(),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "global `os.system` is not allowed (GLOBAL at byte 0)"
    );
    assert_eq!(e.offset(), 0);
    let e = unpickle(b"\x80\x02\xff.", &torch_policy(), &Limits::default()).unwrap_err();
    assert_eq!(e.to_string(), "unknown opcode 0xff at byte 2");
    assert!(format!("{:?}", torch_policy()).contains("OrderedDict"));
}

// ---------------------------------------------------------------- malicious corpus

#[derive(Clone, Copy, Debug)]
enum Pol {
    Torch,
    AllowAll,
}

type Check = fn(&Result<Unpickled, PickleError>) -> bool;

/// `err!(pattern)`: the result matches `Err(pattern)`.
macro_rules! err {
    ($($p:tt)+) => {
        (|r: &Result<Unpickled, PickleError>| matches!(r, Err($($p)+))) as Check
    };
}

fn unsafe_global(r: &Result<Unpickled, PickleError>, m: &str, n: &str, at: usize) -> bool {
    matches!(r, Err(PickleError::UnsafeGlobal { module, name, offset, .. })
        if module == m && name == n && *offset == at)
}

fn limits_with(f: fn(&mut Limits)) -> Limits {
    let mut l = Limits::default();
    f(&mut l);
    l
}

/// One hostile file and what it must produce.
struct Entry {
    file: &'static str,
    policy: Pol,
    limits: fn(&mut Limits),
    check: Check,
}

fn default_limits(_: &mut Limits) {}

/// Torch's allow-list, default limits.
const fn torch(file: &'static str, check: Check) -> Entry {
    Entry {
        file,
        policy: Pol::Torch,
        limits: default_limits,
        check,
    }
}

/// Torch's allow-list, tweaked limits.
const fn tight(file: &'static str, limits: fn(&mut Limits), check: Check) -> Entry {
    Entry {
        file,
        policy: Pol::Torch,
        limits,
        check,
    }
}

/// A policy allowing every global: the blocked modules still fail.
const fn allow_all(file: &'static str, check: Check) -> Entry {
    Entry {
        file,
        policy: Pol::AllowAll,
        limits: default_limits,
        check,
    }
}

#[rustfmt::skip]
const CORPUS: &[Entry] = &[
    torch("01-os-system", |r| unsafe_global(r, "os", "system", 0)),
    torch("02-posix-system-proto2", |r| unsafe_global(r, "posix", "system", 2)),
    torch("03-subprocess-popen-stack-global", |r| unsafe_global(r, "subprocess", "Popen", 21)),
    torch("04-builtins-eval", |r| unsafe_global(r, "builtins", "eval", 0)),
    torch("05-builtins-exec", |r| unsafe_global(r, "builtins", "exec", 2)),
    torch("06-builtins-getattr", |r| unsafe_global(r, "builtins", "getattr", 2)),
    torch("07-python2-builtin-eval", |r| unsafe_global(r, "builtins", "eval", 0)),
    allow_all("08-nt-system-allow-all", |r| unsafe_global(r, "nt", "system", 0)),
    allow_all("09-os-path-allow-all", |r| unsafe_global(r, "os.path", "exists", 0)),
    torch("10-inst", err!(PickleError::ForbiddenOpcode { opcode: "INST", offset: 7 })),
    torch("11-obj", err!(PickleError::ForbiddenOpcode { opcode: "OBJ", offset: 26 })),
    torch("12-newobj-ex-forbidden-class", |r| unsafe_global(r, "subprocess", "Popen", 21)),
    torch("13-newobj-on-list", err!(PickleError::NewObjNotAllowed { kind: "list", offset: 4, .. })),
    torch("14-build-on-list", err!(PickleError::BuildOnUnsupported { kind: "list", offset: 4 })),
    torch("15-build-on-int", err!(PickleError::BuildOnUnsupported { kind: "int", offset: 5 })),
    // 2**100 leaves if expanded; a few hundred objects here.
    torch("16-memo-bomb", |r| matches!(r, Ok(u) if u.objects().len() < 500
        && u.tuple_items(u.root()).map(<[_]>::len) == Some(2))),
    torch("17-recursion-bomb", err!(PickleError::TooDeep { offset: 200_001, limit: 1000 })),
    torch("18-huge-binunicode8", err!(PickleError::StringTooLong { len: 0x1000_0000_0000_0000, offset: 2, .. })),
    torch("19-huge-binbytes8", err!(PickleError::StringTooLong { len: 0x1000_0000_0000_0000, offset: 2, .. })),
    torch("20-huge-long4", err!(PickleError::BigIntTooLarge { len: 0x7fff_ffff, offset: 2, .. })),
    torch("21-frame-larger-than-input", err!(PickleError::BadFrame { offset: 2, .. })),
    torch("22-get-missing-memo", err!(PickleError::MemoKeyMissing { key: 5, offset: 2, .. })),
    torch("23-stack-underflow", err!(PickleError::StackUnderflow { opcode: "TUPLE2", offset: 4 })),
    torch("24-unknown-opcode-ff", err!(PickleError::UnknownOpcode { op: 0xff, offset: 2 })),
    torch("25-protocol-6", err!(PickleError::UnsupportedProtocol { proto: 6, offset: 0 })),
    torch("26-ext2", err!(PickleError::ForbiddenOpcode { opcode: "EXT2", offset: 2 })),
    torch("27-readonly-buffer", err!(PickleError::ForbiddenOpcode { opcode: "READONLY_BUFFER", offset: 12 })),
    torch("28-next-buffer", err!(PickleError::ForbiddenOpcode { opcode: "NEXT_BUFFER", offset: 2 })),
    torch("29-torch-gadget-persid-eval", |r| unsafe_global(r, "builtins", "eval", 51)),
    torch("30-reduce-on-call-result", err!(PickleError::ReduceOnNonGlobal { kind: "call result", offset: 17 })),
    torch("31-reduce-args-not-tuple", err!(PickleError::BadArgument { opcode: "REDUCE", offset: 15, .. })),
    torch("32-setitem-on-list", err!(PickleError::BadArgument { opcode: "SETITEM", offset: 7, .. })),
    torch("33-append-on-dict", err!(PickleError::BadArgument { opcode: "APPEND", offset: 5, .. })),
    torch("34-no-stop", err!(PickleError::NoStop { offset: 8 })),
    torch("35-empty-stack-at-stop", err!(PickleError::EmptyStack { offset: 2 })),
    torch("36-mark-not-found", err!(PickleError::MarkNotFound { opcode: "TUPLE", offset: 6 })),
    torch("37-invalid-utf8", err!(PickleError::InvalidUtf8 { opcode: "BINUNICODE", offset: 2 })),
    torch("38-string-unquoted", err!(PickleError::BadArgument { opcode: "STRING", offset: 0, .. })),
    torch("39-negative-binstring", err!(PickleError::BadArgument { opcode: "BINSTRING", offset: 2, .. })),
    tight("40-memo-too-large", |l| l.max_memo = 16, err!(PickleError::MemoTooLarge { limit: 16, offset: 35, .. })),
    tight("41-too-many-objects", |l| l.max_objects = 100, err!(PickleError::TooManyObjects { limit: 100, offset: 202, .. })),
    tight("42-stack-too-deep", |l| l.max_stack = 100, err!(PickleError::StackTooDeep { limit: 100, offset: 102, .. })),
    torch("43-truncated-binint", err!(PickleError::Truncated { opcode: "BININT", offset: 2 })),
    torch("44-huge-decimal-long", err!(PickleError::BigIntTooLarge { opcode: "LONG", offset: 0, .. })),
    torch("45-nested-frame", err!(PickleError::BadFrame { offset: 11, .. })),
    torch("46-opcode-straddles-frame", err!(PickleError::BadFrame { offset: 11, .. })),
    torch("47-build-twice", err!(PickleError::BadArgument { opcode: "BUILD", offset: 19, .. })),
    torch("48-stack-global-non-str", err!(PickleError::BadArgument { opcode: "STACK_GLOBAL", offset: 6, .. })),
    torch("49-dict-odd-items", err!(PickleError::BadArgument { opcode: "DICT", offset: 3, .. })),
    torch("50-newobj-ex-kwargs", err!(PickleError::BadArgument { opcode: "NEWOBJ_EX", offset: 22, .. })),
    torch("51-global-not-utf8", err!(PickleError::InvalidUtf8 { opcode: "GLOBAL", offset: 0 })),
    torch("52-reduce-on-str", err!(PickleError::ReduceOnNonGlobal { kind: "str", offset: 17 })),
    torch("53-append-below-mark", err!(PickleError::StackUnderflow { opcode: "APPEND", offset: 6 })),
    torch("54-int-garbage", err!(PickleError::BadArgument { opcode: "INT", offset: 0, .. })),
    torch("55-lone-surrogate-utf8", err!(PickleError::InvalidUtf8 { opcode: "BINUNICODE", offset: 2 })),
    torch("56-lone-surrogate-escape", err!(PickleError::InvalidUtf8 { opcode: "UNICODE", offset: 0 })),
    torch("57-copyreg-reconstructor", |r| unsafe_global(r, "copyreg", "_reconstructor", 0)),
    torch("58-torch-load-from-bytes", |r| unsafe_global(r, "torch.storage", "_load_from_bytes", 2)),
    torch("59-build-on-global", err!(PickleError::BuildOnUnsupported { kind: "global", offset: 28 })),
    torch("60-truncated-global-line", err!(PickleError::Truncated { opcode: "GLOBAL", offset: 0 })),
    tight("61-long-line-over-limit", |l| l.max_string_len = 1000,
        err!(PickleError::StringTooLong { opcode: "INT", offset: 0, limit: 1000, .. })),
];

#[test]
fn malicious_corpus() {
    let mut on_disk: Vec<String> = std::fs::read_dir(vm_data("malicious"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".pkl"))
        .collect();
    on_disk.sort();
    let in_table: Vec<String> = CORPUS.iter().map(|c| format!("{}.pkl", c.file)).collect();
    assert_eq!(on_disk, in_table, "corpus files and table differ");
    assert!(CORPUS.len() >= 20);

    for entry in CORPUS {
        let name = entry.file;
        let data = read(&format!("malicious/{name}.pkl"));
        let limits = limits_with(entry.limits);
        let policy = match entry.policy {
            Pol::Torch => torch_policy(),
            Pol::AllowAll => Policy::new(&everything),
        };
        let start = Instant::now();
        let result = unpickle(&data, &policy, &limits);
        let took = start.elapsed();
        assert!(
            (entry.check)(&result),
            "{name}: got {:?}",
            result.map(|u| u.root())
        );
        assert!(took < Duration::from_secs(2), "{name} took {took:?}");
        if let Err(e) = &result {
            assert!(e.offset() <= data.len(), "{name}: {e}");
            assert!(!e.to_string().is_empty());
        }
    }
}

// ---------------------------------------------------------------- fuzzing

/// Every id in the graph points into the arena.
fn ids_valid(u: &Unpickled) -> bool {
    let n = u.objects().len();
    let ok = |i: &ObjId| *i < n;
    u.root() < n
        && u.objects().iter().all(|o| match o {
            Obj::Tuple(v) | Obj::List(v) | Obj::Set(v) | Obj::FrozenSet(v) => v.iter().all(ok),
            Obj::Dict { items, state } => {
                items.iter().all(|(k, v)| ok(k) && ok(v)) && state.iter().all(ok)
            }
            Obj::Call { func, args, state } => ok(func) && ok(args) && state.iter().all(ok),
            Obj::PersistentId(p) => ok(p),
            _ => true,
        })
}

fn seed_pickles() -> Vec<Vec<u8>> {
    [
        "benign/torch_like_state_dict-p2.pkl",
        "benign/nested-p0.pkl",
        "benign/nested-p4.pkl",
        "benign/recursive_tuple-p0.pkl",
        "benign/unicode-p0.pkl",
        "benign/set-p5.pkl",
        "benign/handmade-py2_text.pkl",
        "benign/handmade-frames.pkl",
    ]
    .iter()
    .map(|f| read(f))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_pickles_never_panic(
        seed in 0usize..8,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut data = seed_pickles().swap_remove(seed);
        for (at, byte, kind) in edits {
            if data.is_empty() { break; }
            let i = at.index(data.len());
            match kind {
                0 => data[i] = byte,
                1 => { data.insert(i, byte); }
                _ => { data.remove(i); }
            }
        }
        let limits = Limits { max_depth: 50, ..Limits::default() };
        for policy in [torch_policy(), Policy::new(&everything)] {
            if let Ok(u) = unpickle(&data, &policy, &limits) {
                prop_assert!(ids_valid(&u));
                prop_assert!(u.consumed() <= data.len());
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(u) = unpickle(&data, &Policy::new(&everything), &Limits::default()) {
            prop_assert!(ids_valid(&u));
        }
    }
}
