//! What `inspect` adds for a GGUF file: the header fields llama.cpp users
//! look for (architecture, alignment, data offset, `general.file_type` by
//! name) and, per tensor, the ggml type and the `ne` order.

use serde::Serialize;
use weightkit_core::Value;
use weightkit_gguf::GgufFile;

use super::value::human_value;

/// The GGUF-only part of the report.
#[derive(Debug)]
pub(super) struct GgufSummary<'a> {
    pub(super) version: u32,
    pub(super) alignment: usize,
    pub(super) data_offset: usize,
    pub(super) architecture: Option<&'a Value>,
    pub(super) name: Option<&'a Value>,
    pub(super) file_type: Option<&'a Value>,
    pub(super) quantization_version: Option<&'a Value>,
}

impl<'a> GgufSummary<'a> {
    pub(super) fn new(g: &'a GgufFile) -> Self {
        GgufSummary {
            version: g.version(),
            alignment: g.header().alignment(),
            data_offset: g.header().data_offset(),
            architecture: g.get("general.architecture"),
            name: g.get("general.name"),
            file_type: g.get("general.file_type"),
            quantization_version: g.get("general.quantization_version"),
        }
    }

    /// Header lines, in order: `(key, value)`.
    pub(super) fn head_lines(&self) -> Vec<(&'static str, String)> {
        let mut lines = vec![(
            "architecture",
            self.architecture
                .map_or_else(|| "not set".to_owned(), human_value),
        )];
        if let Some(n) = self.name {
            lines.push(("name", human_value(n)));
        }
        lines.push(("alignment", self.alignment.to_string()));
        lines.push((
            "data offset",
            format!("{} ({:#x})", self.data_offset, self.data_offset),
        ));
        lines
    }

    /// Lines after the data size.
    pub(super) fn tail_lines(&self) -> Vec<(&'static str, String)> {
        let mut lines = Vec::new();
        if let Some(v) = self.file_type {
            let line = match self.json_file_type() {
                Some(JsonFileType { id, name: Some(n) }) => format!("{id} ({n})"),
                Some(JsonFileType { id, name: None }) => format!("{id} (unknown)"),
                None => human_value(v),
            };
            lines.push(("file type", line));
        }
        if let Some(v) = self.quantization_version {
            lines.push(("quantization version", human_value(v)));
        }
        lines
    }

    /// `general.file_type`, if it is an integer.
    pub(super) fn json_file_type(&self) -> Option<JsonFileType> {
        let id = self.file_type?.as_u64()?;
        Some(JsonFileType {
            id,
            name: ftype_name(id),
        })
    }
}

/// `general.file_type` for `--json`: `{"id": 15, "name": "Q4_K_M"}`.
#[derive(Debug, Serialize)]
pub(super) struct JsonFileType {
    id: u64,
    name: Option<&'static str>,
}

/// llama.cpp's `enum llama_ftype` (`LLAMA_FTYPE_MOSTLY_` dropped), for the
/// values GGUF files carry; removed and never-stored values are `None`.
pub(super) fn ftype_name(id: u64) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        4 => "Q4_1_SOME_F16",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        39 => "NVFP4",
        40 => "Q1_0",
        41 => "Q2_0",
        _ => return None,
    })
}

/// `ne=[64, 5, 2]`: GGUF's dimension order, innermost first.
pub(super) fn ne_string(ne: &[u64]) -> String {
    let dims: Vec<String> = ne.iter().map(u64::to_string).collect();
    format!("ne=[{}]", dims.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftype_names() {
        let expected = [
            (0, "F32"),
            (1, "F16"),
            (2, "Q4_0"),
            (3, "Q4_1"),
            (7, "Q8_0"),
            (8, "Q5_0"),
            (9, "Q5_1"),
            (10, "Q2_K"),
            (11, "Q3_K_S"),
            (12, "Q3_K_M"),
            (13, "Q3_K_L"),
            (14, "Q4_K_S"),
            (15, "Q4_K_M"),
            (16, "Q5_K_S"),
            (17, "Q5_K_M"),
            (18, "Q6_K"),
            (25, "IQ4_NL"),
            (30, "IQ4_XS"),
            (32, "BF16"),
            (36, "TQ1_0"),
            (37, "TQ2_0"),
            (40, "Q1_0"),
            (41, "Q2_0"),
        ];
        for (id, name) in expected {
            assert_eq!(ftype_name(id), Some(name), "{id}");
        }
        for removed in [5, 6, 33, 34, 35, 1024, u64::MAX] {
            assert_eq!(ftype_name(removed), None, "{removed}");
        }
        assert_eq!(ne_string(&[64, 5, 2]), "ne=[64, 5, 2]");
        assert_eq!(ne_string(&[]), "ne=[]");
    }

    #[test]
    fn file_type_lines() {
        let ft = Value::U32(15);
        let q = Value::U32(2);
        let s = GgufSummary {
            version: 3,
            alignment: 32,
            data_offset: 704,
            architecture: None,
            name: None,
            file_type: Some(&ft),
            quantization_version: Some(&q),
        };
        assert_eq!(
            s.tail_lines(),
            [
                ("file type", "15 (Q4_K_M)".to_owned()),
                ("quantization version", "2".to_owned())
            ]
        );
        assert_eq!(
            s.head_lines(),
            [
                ("architecture", "not set".to_owned()),
                ("alignment", "32".to_owned()),
                ("data offset", "704 (0x2c0)".to_owned())
            ]
        );
        let odd = Value::from("Q4_K_M");
        let s = GgufSummary {
            file_type: Some(&odd),
            quantization_version: None,
            ..s
        };
        assert_eq!(s.tail_lines(), [("file type", "Q4_K_M".to_owned())]);
        assert!(s.json_file_type().is_none());
    }
}
