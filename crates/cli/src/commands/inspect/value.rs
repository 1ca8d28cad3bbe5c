//! Metadata values, twice: for humans, bounded (a 150,000-entry tokenizer
//! array costs one short line, and only its first items are ever touched),
//! and for `--json`, complete and lossless.

use std::fmt::Write as _;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use weightkit_core::{Array, Metadata, Value, ValueType};

use crate::source::to_u64;
use crate::units::thousands;

/// Longest value shown, in characters (before the `... (N chars)` note).
const MAX_CHARS: usize = 160;
/// Most array items shown.
const MAX_ITEMS: usize = 8;
/// Longest string shown as an array item.
const MAX_ITEM_CHARS: usize = 48;

/// Control characters (a hostile file's terminal escapes, newlines that
/// would break the layout) shown escaped.
pub(super) fn escape(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A metadata value for humans: strings unquoted, long strings cut, long
/// arrays reduced to their first items and their length.
pub(super) fn human_value(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "\"\"".to_owned(),
        Value::String(s) => cut_escaped(s, MAX_CHARS),
        Value::RawString(b) => format!(
            "{} (not valid UTF-8)",
            cut_escaped(&String::from_utf8_lossy(b), MAX_CHARS)
        ),
        Value::Array(a) => array_string(a, MAX_CHARS),
        other => scalar_string(other),
    }
}

/// The GGUF type as llama.cpp prints it: `u32`, `str`, `arr[str,32000]`.
pub(super) fn type_name(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("arr[{},{}]", scalar_type_name(a.elem_type()), a.len()),
        other => scalar_type_name(other.value_type()).to_owned(),
    }
}

/// llama.cpp's `gguf_type_name`.
fn scalar_type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::U8 => "u8",
        ValueType::I8 => "i8",
        ValueType::U16 => "u16",
        ValueType::I16 => "i16",
        ValueType::U32 => "u32",
        ValueType::I32 => "i32",
        ValueType::F32 => "f32",
        ValueType::Bool => "bool",
        ValueType::String => "str",
        ValueType::Array => "arr",
        ValueType::U64 => "u64",
        ValueType::I64 => "i64",
        ValueType::F64 => "f64",
        // `ValueType` is non-exhaustive.
        _ => "?",
    }
}

/// Numbers and bools. Floats in Rust's shortest round-trip form, with an
/// exponent where that is shorter (`1e30`, not 31 digits).
fn scalar_string(v: &Value) -> String {
    match v {
        Value::F32(x) => format!("{x:?}"),
        Value::F64(x) => format!("{x:?}"),
        other => escape(&other.to_string()),
    }
}

/// `s` escaped, cut to `max` characters with a `... (N chars)` note.
fn cut_escaped(s: &str, max: usize) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(max).collect();
    if chars.next().is_none() {
        let e = escape(&head);
        if e.chars().count() <= max {
            return e;
        }
    }
    let mut out: String = escape(&head).chars().take(max).collect();
    let _ = write!(out, "... ({} chars)", thousands(to_u64(s.chars().count())));
    out
}

/// `"abc"`, or `"abc"...` when cut; control characters escaped by `{:?}`.
fn quoted(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(MAX_ITEM_CHARS).collect();
    if chars.next().is_none() {
        format!("{head:?}")
    } else {
        format!("{head:?}...")
    }
}

/// `[1, 2, 3]`, or `[1, 2, ... (32,000 items)]` once `MAX_ITEMS` items or
/// about `budget` characters are shown. Only the items shown are read.
fn array_string(a: &Array, budget: usize) -> String {
    let n = a.len();
    let mut s = String::from("[");
    let mut shown = 0;
    while shown < n && shown < MAX_ITEMS && s.chars().count() < budget {
        if shown > 0 {
            s.push_str(", ");
        }
        let left = budget.saturating_sub(s.chars().count());
        s.push_str(&item_string(a, shown, left));
        shown += 1;
    }
    if shown < n {
        if shown > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "... ({} items)", thousands(to_u64(n)));
    }
    s.push(']');
    s
}

/// Item `i` of `a`, without cloning the array or the item.
fn item_string(a: &Array, i: usize, budget: usize) -> String {
    fn num<T: ToString>(v: &[T], i: usize) -> String {
        v.get(i).map(ToString::to_string).unwrap_or_default()
    }
    match a {
        Array::U8(v) => num(v, i),
        Array::I8(v) => num(v, i),
        Array::U16(v) => num(v, i),
        Array::I16(v) => num(v, i),
        Array::U32(v) => num(v, i),
        Array::I32(v) => num(v, i),
        Array::U64(v) => num(v, i),
        Array::I64(v) => num(v, i),
        Array::Bool(v) => num(v, i),
        Array::F32(v) => v.get(i).map(|x| format!("{x:?}")).unwrap_or_default(),
        Array::F64(v) => v.get(i).map(|x| format!("{x:?}")).unwrap_or_default(),
        Array::String(v) => v.get(i).map(|s| quoted(s)).unwrap_or_default(),
        Array::Strings(v) => match v.get(i) {
            Some(Value::String(s)) => quoted(s),
            Some(Value::RawString(b)) => quoted(&String::from_utf8_lossy(b)),
            Some(other) => human_value(other),
            None => String::new(),
        },
        Array::Array(v) => v
            .get(i)
            .map(|inner| array_string(inner, budget))
            .unwrap_or_default(),
        // `Array` is non-exhaustive: a future element type, via a clone.
        other => other.get(i).map(|v| human_value(&v)).unwrap_or_default(),
    }
}

/// Metadata as a JSON object in the file's order: strings as strings,
/// numbers as numbers, arrays as arrays, all of every array.
pub(super) struct JsonMetadata<'a>(pub(super) &'a Metadata);

impl Serialize for JsonMetadata<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            map.serialize_entry(k, &JsonValue(v))?;
        }
        map.end()
    }
}

/// Each key's GGUF type (`u32`, `arr[str,32000]`), in the file's order.
pub(super) struct JsonMetadataTypes<'a>(pub(super) &'a Metadata);

impl Serialize for JsonMetadataTypes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            map.serialize_entry(k, &type_name(v))?;
        }
        map.end()
    }
}

struct JsonValue<'a>(&'a Value);

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::U8(v) => s.serialize_u8(*v),
            Value::I8(v) => s.serialize_i8(*v),
            Value::U16(v) => s.serialize_u16(*v),
            Value::I16(v) => s.serialize_i16(*v),
            Value::U32(v) => s.serialize_u32(*v),
            Value::I32(v) => s.serialize_i32(*v),
            Value::U64(v) => s.serialize_u64(*v),
            Value::I64(v) => s.serialize_i64(*v),
            // serde_json writes non-finite floats as null.
            Value::F32(v) => s.serialize_f32(*v),
            Value::F64(v) => s.serialize_f64(*v),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::String(v) => s.serialize_str(v),
            Value::Array(a) => JsonArray(a).serialize(s),
            Value::RawString(b) => s.serialize_str(&String::from_utf8_lossy(b)),
            // `Value` is non-exhaustive: a future variant prints as text.
            other => s.collect_str(other),
        }
    }
}

struct JsonArray<'a>(&'a Array);

impl Serialize for JsonArray<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            // A `Vec<u8>` is a sequence of numbers to serde_json.
            Array::U8(v) => v.serialize(s),
            Array::I8(v) => v.serialize(s),
            Array::U16(v) => v.serialize(s),
            Array::I16(v) => v.serialize(s),
            Array::U32(v) => v.serialize(s),
            Array::I32(v) => v.serialize(s),
            Array::U64(v) => v.serialize(s),
            Array::I64(v) => v.serialize(s),
            Array::F32(v) => v.serialize(s),
            Array::F64(v) => v.serialize(s),
            Array::Bool(v) => v.serialize(s),
            Array::String(v) => v.serialize(s),
            Array::Strings(v) => s.collect_seq(v.iter().map(JsonValue)),
            Array::Array(v) => s.collect_seq(v.iter().map(JsonArray)),
            // `Array` is non-exhaustive: a future element type, via clones.
            other => {
                let mut seq = s.serialize_seq(Some(other.len()))?;
                for i in 0..other.len() {
                    if let Some(v) = other.get(i) {
                        seq.serialize_element(&JsonValue(&v))?;
                    }
                }
                seq.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_values() {
        assert_eq!(human_value(&Value::from("pt")), "pt");
        assert_eq!(human_value(&Value::from("")), "\"\"");
        assert_eq!(
            human_value(&Value::from("a\nb\x1b[31m")),
            "a\\nb\\u{1b}[31m"
        );
        assert_eq!(human_value(&Value::U64(247_424)), "247424");
        assert_eq!(human_value(&Value::F32(0.1)), "0.1");
        assert_eq!(human_value(&Value::F32(1e30)), "1e30");
        assert_eq!(human_value(&Value::F64(-1e-300)), "-1e-300");
        assert_eq!(
            human_value(&Value::RawString(vec![b'a', 0xff])),
            "a\u{fffd} (not valid UTF-8)"
        );
        let long = Value::Array(Array::U32((0..10).collect()));
        assert_eq!(
            human_value(&long),
            "[0, 1, 2, 3, 4, 5, 6, 7, ... (10 items)]"
        );
        let big = human_value(&Value::String("x".repeat(1000)));
        assert!(big.ends_with("... (1,000 chars)"), "{big}");
        assert_eq!(big.chars().count(), MAX_CHARS + "... (1,000 chars)".len());
        // Escaping that lengthens a short string still respects the cut.
        let ctl = human_value(&Value::String("\x01".repeat(100)));
        assert!(ctl.ends_with("... (100 chars)"), "{ctl}");
    }

    #[test]
    fn human_arrays_stay_short() {
        let tokens: Vec<String> = (0..150_000).map(|i| format!("tok\n{i}")).collect();
        let v = Value::Array(Array::String(tokens));
        assert_eq!(type_name(&v), "arr[str,150000]");
        let s = human_value(&v);
        assert!(s.starts_with(r#"["tok\n0", "tok\n1", "#), "{s}");
        assert!(s.ends_with(", ... (150,000 items)]"), "{s}");
        // Long string items are cut, and so is the line.
        let long = Value::Array(Array::String(vec!["y".repeat(500); 20]));
        let s = human_value(&long);
        assert!(s.chars().count() < 2 * MAX_CHARS, "{s}");
        assert!(s.contains("\"..."), "{s}");
        assert!(s.ends_with("(20 items)]"), "{s}");
        // Nested arrays are bounded at every level.
        let nested = Value::Array(Array::Array(vec![
            Array::I32((0..100_000).collect()),
            Array::I32(vec![4, 5]),
        ]));
        assert_eq!(type_name(&nested), "arr[arr,2]");
        let s = human_value(&nested);
        assert!(s.starts_with("[[0, 1, 2,"), "{s}");
        assert!(s.contains("(100,000 items)], [4, 5]]"), "{s}");
        let mixed = Value::Array(Array::Strings(vec![
            Value::from("ok"),
            Value::RawString(vec![0xff]),
        ]));
        assert_eq!(human_value(&mixed), "[\"ok\", \"\u{fffd}\"]");
    }

    #[test]
    fn json_values() {
        let m: Metadata = [
            ("s", Value::from("x")),
            ("n", Value::U64(u64::MAX)),
            ("neg", Value::I32(-1)),
            ("f", Value::F64(0.5)),
            ("f32", Value::F32(0.1)),
            ("nan", Value::F32(f32::NAN)),
            ("a", Value::Array(Array::Bool(vec![true]))),
            ("u8", Value::Array(Array::U8(vec![0, 255]))),
            (
                "nested",
                Value::Array(Array::Array(vec![
                    Array::String(vec!["a".into()]),
                    Array::F64(vec![f64::INFINITY]),
                ])),
            ),
            ("raw", Value::RawString(vec![b'a', 0xff])),
        ]
        .into_iter()
        .collect();
        let text = serde_json::to_string(&JsonMetadata(&m)).unwrap();
        assert_eq!(
            text,
            r#"{"s":"x","n":18446744073709551615,"neg":-1,"f":0.5,"f32":0.1,"nan":null,"a":[true],"u8":[0,255],"nested":[["a"],[null]],"raw":"a�"}"#
        );
        let types = serde_json::to_string(&JsonMetadataTypes(&m)).unwrap();
        assert!(
            types.starts_with(r#"{"s":"str","n":"u64","neg":"i32","f":"f64","f32":"f32""#),
            "{types}"
        );
        assert!(types.ends_with(r#""u8":"arr[u8,2]","nested":"arr[arr,2]","raw":"str"}"#));
    }
}
