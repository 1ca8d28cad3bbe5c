//! A minimal JSON reader for the fixture manifest (the crate's only
//! dev-dependency is proptest).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    pub(crate) fn parse(s: &str) -> Json {
        let mut p = Parser {
            b: s.as_bytes(),
            i: 0,
        };
        let v = p.value();
        p.ws();
        assert_eq!(p.i, p.b.len(), "trailing data in JSON");
        v
    }

    pub(crate) fn get(&self, k: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.get(k),
            _ => None,
        }
    }

    pub(crate) fn at(&self, k: &str) -> &Json {
        self.get(k).unwrap_or_else(|| panic!("missing key {k}"))
    }

    pub(crate) fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            other => panic!("not an array: {other:?}"),
        }
    }

    pub(crate) fn obj(&self) -> &BTreeMap<String, Json> {
        match self {
            Json::Obj(m) => m,
            other => panic!("not an object: {other:?}"),
        }
    }

    pub(crate) fn num(&self) -> f64 {
        match self {
            Json::Num(x) => *x,
            other => panic!("not a number: {other:?}"),
        }
    }

    pub(crate) fn usize(&self) -> usize {
        self.num() as usize
    }

    pub(crate) fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    pub(crate) fn dims(&self) -> Vec<usize> {
        self.arr().iter().map(Json::usize).collect()
    }
}

/// Parses Python's `float.hex()` output (`0x1.8p+1`, `-0x0.0p+0`, `inf`).
pub(crate) fn from_hex(s: &str) -> f64 {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let v = if s == "inf" {
        f64::INFINITY
    } else {
        let s = s.strip_prefix("0x").expect("hex float");
        let (mant, exp) = s.split_once('p').expect("exponent");
        let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
        let mut m = u64::from_str_radix(int, 16).unwrap() as f64;
        let mut scale = 1.0 / 16.0;
        for c in frac.chars() {
            m += c.to_digit(16).unwrap() as f64 * scale;
            scale /= 16.0;
        }
        m * 2f64.powi(exp.parse::<i32>().unwrap())
    };
    if neg { -v } else { v }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.b[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Json {
        self.ws();
        let c = self.b[self.i];
        match c {
            b'{' => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.eat("}") {
                    return Json::Obj(m);
                }
                loop {
                    self.ws();
                    let k = self.string();
                    self.ws();
                    assert!(self.eat(":"));
                    let v = self.value();
                    m.insert(k, v);
                    self.ws();
                    if self.eat("}") {
                        return Json::Obj(m);
                    }
                    assert!(self.eat(","));
                }
            }
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.eat("]") {
                    return Json::Arr(a);
                }
                loop {
                    a.push(self.value());
                    self.ws();
                    if self.eat("]") {
                        return Json::Arr(a);
                    }
                    assert!(self.eat(","));
                }
            }
            b'"' => Json::Str(self.string()),
            _ if self.eat("null") => Json::Null,
            _ if self.eat("true") => Json::Bool(true),
            _ if self.eat("false") => Json::Bool(false),
            _ => {
                let start = self.i;
                while self.i < self.b.len() && b"+-0123456789.eE".contains(&self.b[self.i]) {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.b[start..self.i]).unwrap();
                Json::Num(t.parse().unwrap_or_else(|_| panic!("bad number {t}")))
            }
        }
    }

    fn string(&mut self) -> String {
        assert!(self.eat("\""));
        let mut s = String::new();
        loop {
            let c = self.b[self.i];
            self.i += 1;
            match c {
                b'"' => return s,
                b'\\' => {
                    let e = self.b[self.i];
                    self.i += 1;
                    match e {
                        b'n' => s.push('\n'),
                        b't' => s.push('\t'),
                        b'u' => {
                            let h = std::str::from_utf8(&self.b[self.i..self.i + 4]).unwrap();
                            self.i += 4;
                            s.push(char::from_u32(u32::from_str_radix(h, 16).unwrap()).unwrap());
                        }
                        other => s.push(other as char),
                    }
                }
                _ => {
                    // Multi-byte UTF-8 passes through byte by byte.
                    let start = self.i - 1;
                    let mut end = self.i;
                    while end < self.b.len() && (self.b[end] & 0xC0) == 0x80 {
                        end += 1;
                    }
                    s.push_str(std::str::from_utf8(&self.b[start..end]).unwrap());
                    self.i = end;
                }
            }
        }
    }
}

#[test]
fn parses_and_reads_hex_floats() {
    let v = Json::parse(r#"{"a": [1, 2.5e-3, -4], "b": {"c": "x\"y"}, "d": null, "e": true}"#);
    assert_eq!(v.at("a").arr()[1].num(), 2.5e-3);
    assert_eq!(v.at("b").at("c").str(), "x\"y");
    assert_eq!(from_hex("0x1.8000000000000p+1"), 3.0);
    assert_eq!(from_hex("-0x1.6a09e667f3bcdp+0"), -std::f64::consts::SQRT_2);
    assert_eq!(from_hex("0x0.0p+0"), 0.0);
}
