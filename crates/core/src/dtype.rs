//! Element and block types.
//!
//! One enum covers both worlds weightkit moves weights between: every dtype a
//! `.safetensors` header can name (including the sub-byte MX float formats) and
//! every tensor type id a GGUF file can carry (ggml's block-quantized formats).
//! Where the two worlds share a type (F32, F16, BF16, F64, I8, I16, I32, I64)
//! they share a variant, so a tensor keeps its identity across formats.

use std::fmt;
use std::str::FromStr;

use crate::error::CoreError;

/// The element (or block) type of a tensor.
///
/// Plain types store one element in `size_in_bytes()` bytes. Sub-byte float
/// types (F4, F6) pack several elements into whole bytes, and ggml block types
/// store `block_elems()` elements in `block_bytes()` bytes. The layout
/// arithmetic of all three is [`DType::block_elems`] / [`DType::block_bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[allow(non_camel_case_types)]
pub enum DType {
    /// Boolean, one byte per element (0 or 1).
    Bool,
    /// MX FP4 (E2M1), two elements per byte (safetensors `F4`).
    F4,
    /// MX FP6 E2M3, four elements per three bytes.
    F6_E2M3,
    /// MX FP6 E3M2, four elements per three bytes.
    F6_E3M2,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer (ggml `I8`).
    I8,
    /// FP8 E5M2.
    F8_E5M2,
    /// FP8 E4M3 (the `fn` variant: no infinities).
    F8_E4M3,
    /// FP8 E8M0 (MX shared scale).
    F8_E8M0,
    /// FP8 E4M3 FNUZ.
    F8_E4M3FNUZ,
    /// FP8 E5M2 FNUZ.
    F8_E5M2FNUZ,
    /// Signed 16-bit integer (ggml `I16`).
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE 754 half precision (ggml `F16`).
    F16,
    /// bfloat16 (ggml `BF16`).
    BF16,
    /// Signed 32-bit integer (ggml `I32`).
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE 754 single precision (ggml `F32`).
    F32,
    /// Complex number with two f32 parts.
    C64,
    /// IEEE 754 double precision (ggml `F64`).
    F64,
    /// Signed 64-bit integer (ggml `I64`).
    I64,
    /// Unsigned 64-bit integer.
    U64,
    /// ggml Q4_0: 32 elements, f16 scale + 16 nibble bytes.
    Q4_0,
    /// ggml Q4_1: 32 elements, f16 scale and min + 16 nibble bytes.
    Q4_1,
    /// ggml Q5_0.
    Q5_0,
    /// ggml Q5_1.
    Q5_1,
    /// ggml Q8_0: 32 elements, f16 scale + 32 signed bytes.
    Q8_0,
    /// ggml Q8_1 (vec_dot partner; no dequantizer in ggml).
    Q8_1,
    /// ggml Q2_K super-block.
    Q2_K,
    /// ggml Q3_K super-block.
    Q3_K,
    /// ggml Q4_K super-block.
    Q4_K,
    /// ggml Q5_K super-block.
    Q5_K,
    /// ggml Q6_K super-block.
    Q6_K,
    /// ggml Q8_K super-block (vec_dot partner of the k-quants).
    Q8_K,
    /// ggml IQ2_XXS.
    IQ2_XXS,
    /// ggml IQ2_XS.
    IQ2_XS,
    /// ggml IQ3_XXS.
    IQ3_XXS,
    /// ggml IQ1_S.
    IQ1_S,
    /// ggml IQ4_NL.
    IQ4_NL,
    /// ggml IQ3_S.
    IQ3_S,
    /// ggml IQ2_S.
    IQ2_S,
    /// ggml IQ4_XS.
    IQ4_XS,
    /// ggml IQ1_M.
    IQ1_M,
    /// ggml TQ1_0 (ternary).
    TQ1_0,
    /// ggml TQ2_0 (ternary).
    TQ2_0,
    /// ggml MXFP4: 32 elements, E8M0 scale + 16 nibble bytes.
    MXFP4,
    /// ggml NVFP4: 64 elements, four UE4M3 scales + 32 nibble bytes.
    NVFP4,
    /// ggml Q1_0: 128 elements, f16 scale + 16 sign-bit bytes.
    Q1_0,
    /// ggml Q2_0: 64 elements, f16 scale + 16 bytes of 2-bit codes.
    Q2_0,
}

/// How a dtype packs elements into bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Packing {
    /// One element per `bytes` bytes.
    Element {
        /// Bytes per element.
        bytes: usize,
    },
    /// Sub-byte elements packed contiguously across the whole tensor
    /// (safetensors F4/F6): the tensor's total bit count must be a whole
    /// number of bytes.
    Bits {
        /// Bits per element.
        bits: usize,
    },
    /// ggml blocks: every row (innermost dimension) holds a whole number of
    /// blocks of `elems` elements stored in `bytes` bytes.
    Block {
        /// Elements per block.
        elems: usize,
        /// Bytes per block.
        bytes: usize,
    },
}

/// Every dtype, in declaration order.
pub const ALL_DTYPES: [DType; 49] = [
    DType::Bool,
    DType::F4,
    DType::F6_E2M3,
    DType::F6_E3M2,
    DType::U8,
    DType::I8,
    DType::F8_E5M2,
    DType::F8_E4M3,
    DType::F8_E8M0,
    DType::F8_E4M3FNUZ,
    DType::F8_E5M2FNUZ,
    DType::I16,
    DType::U16,
    DType::F16,
    DType::BF16,
    DType::I32,
    DType::U32,
    DType::F32,
    DType::C64,
    DType::F64,
    DType::I64,
    DType::U64,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q8_1,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::Q8_K,
    DType::IQ2_XXS,
    DType::IQ2_XS,
    DType::IQ3_XXS,
    DType::IQ1_S,
    DType::IQ4_NL,
    DType::IQ3_S,
    DType::IQ2_S,
    DType::IQ4_XS,
    DType::IQ1_M,
    DType::TQ1_0,
    DType::TQ2_0,
    DType::MXFP4,
    DType::NVFP4,
    DType::Q1_0,
    DType::Q2_0,
];

/// ggml type ids that once existed and were removed (Q4_2, Q4_3, Q4_0_4_4,
/// Q4_0_4_8, Q4_0_8_8, IQ4_NL_4_4, IQ4_NL_4_8, IQ4_NL_8_8). GGUF readers
/// reject them with a dedicated error.
pub const REMOVED_GGML_TYPE_IDS: [u32; 8] = [4, 5, 31, 32, 33, 36, 37, 38];

const QK_K: usize = 256;

impl DType {
    /// How elements are packed into bytes.
    pub const fn packing(self) -> Packing {
        use DType::*;
        match self {
            Bool | U8 | I8 | F8_E5M2 | F8_E4M3 | F8_E8M0 | F8_E4M3FNUZ | F8_E5M2FNUZ => {
                Packing::Element { bytes: 1 }
            }
            I16 | U16 | F16 | BF16 => Packing::Element { bytes: 2 },
            I32 | U32 | F32 => Packing::Element { bytes: 4 },
            C64 | F64 | I64 | U64 => Packing::Element { bytes: 8 },
            F4 => Packing::Bits { bits: 4 },
            F6_E2M3 | F6_E3M2 => Packing::Bits { bits: 6 },
            Q4_0 => Packing::Block {
                elems: 32,
                bytes: 18,
            },
            Q4_1 => Packing::Block {
                elems: 32,
                bytes: 20,
            },
            Q5_0 => Packing::Block {
                elems: 32,
                bytes: 22,
            },
            Q5_1 => Packing::Block {
                elems: 32,
                bytes: 24,
            },
            Q8_0 => Packing::Block {
                elems: 32,
                bytes: 34,
            },
            Q8_1 => Packing::Block {
                elems: 32,
                bytes: 36,
            },
            Q2_K => Packing::Block {
                elems: QK_K,
                bytes: 84,
            },
            Q3_K => Packing::Block {
                elems: QK_K,
                bytes: 110,
            },
            Q4_K => Packing::Block {
                elems: QK_K,
                bytes: 144,
            },
            Q5_K => Packing::Block {
                elems: QK_K,
                bytes: 176,
            },
            Q6_K => Packing::Block {
                elems: QK_K,
                bytes: 210,
            },
            Q8_K => Packing::Block {
                elems: QK_K,
                bytes: 292,
            },
            IQ2_XXS => Packing::Block {
                elems: QK_K,
                bytes: 66,
            },
            IQ2_XS => Packing::Block {
                elems: QK_K,
                bytes: 74,
            },
            IQ3_XXS => Packing::Block {
                elems: QK_K,
                bytes: 98,
            },
            IQ1_S => Packing::Block {
                elems: QK_K,
                bytes: 50,
            },
            IQ4_NL => Packing::Block {
                elems: 32,
                bytes: 18,
            },
            IQ3_S => Packing::Block {
                elems: QK_K,
                bytes: 110,
            },
            IQ2_S => Packing::Block {
                elems: QK_K,
                bytes: 82,
            },
            IQ4_XS => Packing::Block {
                elems: QK_K,
                bytes: 136,
            },
            IQ1_M => Packing::Block {
                elems: QK_K,
                bytes: 56,
            },
            TQ1_0 => Packing::Block {
                elems: QK_K,
                bytes: 54,
            },
            TQ2_0 => Packing::Block {
                elems: QK_K,
                bytes: 66,
            },
            MXFP4 => Packing::Block {
                elems: 32,
                bytes: 17,
            },
            NVFP4 => Packing::Block {
                elems: 64,
                bytes: 36,
            },
            Q1_0 => Packing::Block {
                elems: 128,
                bytes: 18,
            },
            Q2_0 => Packing::Block {
                elems: 64,
                bytes: 18,
            },
        }
    }

    /// Elements per block: 1 for plain types, 2 for F4, 4 for F6 (whose four
    /// elements fill three bytes), the ggml block length for block types.
    pub const fn block_elems(self) -> usize {
        match self.packing() {
            Packing::Element { .. } => 1,
            Packing::Bits { bits } => 8 / gcd(bits, 8),
            Packing::Block { elems, .. } => elems,
        }
    }

    /// Bytes per block (see [`DType::block_elems`]).
    pub const fn block_bytes(self) -> usize {
        match self.packing() {
            Packing::Element { bytes } => bytes,
            Packing::Bits { bits } => bits / gcd(bits, 8),
            Packing::Block { bytes, .. } => bytes,
        }
    }

    /// Bytes per element for whole-byte element types, `None` for sub-byte
    /// and block types.
    pub const fn size_in_bytes(self) -> Option<usize> {
        match self.packing() {
            Packing::Element { bytes } => Some(bytes),
            _ => None,
        }
    }

    /// Storage bits per element (fractional for block types, hence `f64`):
    /// the "bits per weight" figure that quantization tools report.
    pub fn bits_per_element(self) -> f64 {
        // Block sizes are small constants; the conversions are exact.
        let bits = (self.block_bytes() * 8) as f64;
        bits / self.block_elems() as f64
    }

    /// Whether this is a ggml block-quantized type.
    pub const fn is_quantized(self) -> bool {
        matches!(self.packing(), Packing::Block { .. })
    }

    /// Whether this is a floating-point element type usable as a
    /// full-precision weight (F16, BF16, F32, F64).
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    /// The name a safetensors header uses (`"F32"`, `"F8_E4M3"` ...), or
    /// `None` for ggml-only types.
    pub const fn safetensors_name(self) -> Option<&'static str> {
        use DType::*;
        Some(match self {
            Bool => "BOOL",
            F4 => "F4",
            F6_E2M3 => "F6_E2M3",
            F6_E3M2 => "F6_E3M2",
            U8 => "U8",
            I8 => "I8",
            F8_E5M2 => "F8_E5M2",
            F8_E4M3 => "F8_E4M3",
            F8_E8M0 => "F8_E8M0",
            F8_E4M3FNUZ => "F8_E4M3FNUZ",
            F8_E5M2FNUZ => "F8_E5M2FNUZ",
            I16 => "I16",
            U16 => "U16",
            F16 => "F16",
            BF16 => "BF16",
            I32 => "I32",
            U32 => "U32",
            F32 => "F32",
            C64 => "C64",
            F64 => "F64",
            I64 => "I64",
            U64 => "U64",
            _ => return None,
        })
    }

    /// Parses a safetensors header dtype name (exact, case-sensitive, as the
    /// `safetensors` crate does).
    pub fn from_safetensors_name(name: &str) -> Option<DType> {
        ALL_DTYPES
            .iter()
            .copied()
            .find(|d| d.safetensors_name() == Some(name))
    }

    /// The ggml type id (`enum ggml_type`), or `None` for types GGUF cannot
    /// hold (BOOL, unsigned integers, FP8/FP6/F4, C64).
    pub const fn ggml_type_id(self) -> Option<u32> {
        use DType::*;
        Some(match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            IQ2_XXS => 16,
            IQ2_XS => 17,
            IQ3_XXS => 18,
            IQ1_S => 19,
            IQ4_NL => 20,
            IQ3_S => 21,
            IQ2_S => 22,
            IQ4_XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            IQ1_M => 29,
            BF16 => 30,
            TQ1_0 => 34,
            TQ2_0 => 35,
            MXFP4 => 39,
            NVFP4 => 40,
            Q1_0 => 41,
            Q2_0 => 42,
            _ => return None,
        })
    }

    /// The dtype for a ggml type id; `None` for unknown and removed ids.
    pub fn from_ggml_type_id(id: u32) -> Option<DType> {
        ALL_DTYPES
            .iter()
            .copied()
            .find(|d| d.ggml_type_id() == Some(id))
    }

    /// The name ggml and gguf-py use (`"Q4_K"`, `"BF16"` ...), or `None` for
    /// types GGUF cannot hold.
    pub fn ggml_name(self) -> Option<&'static str> {
        self.ggml_type_id()?;
        Some(self.name())
    }

    /// Parses a ggml type name (`"Q4_K"`, `"q8_0"`, `"IQ4_XS"`),
    /// case-insensitively.
    pub fn from_ggml_name(name: &str) -> Option<DType> {
        ALL_DTYPES
            .iter()
            .copied()
            .find(|d| d.ggml_type_id().is_some() && d.name().eq_ignore_ascii_case(name))
    }

    /// The canonical name: the safetensors name where one exists, else the
    /// ggml name.
    pub const fn name(self) -> &'static str {
        use DType::*;
        if let Some(n) = self.safetensors_name() {
            return n;
        }
        match self {
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            Q8_K => "Q8_K",
            IQ2_XXS => "IQ2_XXS",
            IQ2_XS => "IQ2_XS",
            IQ3_XXS => "IQ3_XXS",
            IQ1_S => "IQ1_S",
            IQ4_NL => "IQ4_NL",
            IQ3_S => "IQ3_S",
            IQ2_S => "IQ2_S",
            IQ4_XS => "IQ4_XS",
            IQ1_M => "IQ1_M",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
            NVFP4 => "NVFP4",
            Q1_0 => "Q1_0",
            Q2_0 => "Q2_0",
            // Every other variant has a safetensors name, returned above.
            _ => "?",
        }
    }

    /// Byte length of `n_elems` elements laid out as one row (or, for
    /// sub-byte types, one whole tensor), checked.
    ///
    /// Errors when the count is not a whole number of blocks / bytes, or when
    /// the byte count overflows `usize`.
    pub fn bytes_for_elems(self, n_elems: usize) -> Result<usize, CoreError> {
        match self.packing() {
            Packing::Element { bytes } => n_elems.checked_mul(bytes).ok_or(CoreError::Overflow),
            Packing::Bits { .. } => {
                // Whole bytes exactly when whole groups of `block_elems`
                // (2 for F4, 4 for F6); dividing first keeps `n_elems * bits`
                // from overflowing when the byte count itself fits.
                let (group, group_bytes) = (self.block_elems(), self.block_bytes());
                if !n_elems.is_multiple_of(group) {
                    return Err(CoreError::NotWholeBytes {
                        dtype: self,
                        elems: n_elems,
                    });
                }
                (n_elems / group)
                    .checked_mul(group_bytes)
                    .ok_or(CoreError::Overflow)
            }
            Packing::Block { elems, bytes } => {
                if !n_elems.is_multiple_of(elems) {
                    return Err(CoreError::NotWholeBlocks {
                        dtype: self,
                        elems: n_elems,
                        block: elems,
                    });
                }
                (n_elems / elems)
                    .checked_mul(bytes)
                    .ok_or(CoreError::Overflow)
            }
        }
    }
}

const fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = CoreError;

    /// Accepts safetensors names exactly, ggml names case-insensitively, and
    /// the common lowercase spellings (`f32`, `bf16`, `bool`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DType::from_safetensors_name(s)
            .or_else(|| DType::from_ggml_name(s))
            .or_else(|| {
                ALL_DTYPES
                    .iter()
                    .copied()
                    .find(|d| d.name().eq_ignore_ascii_case(s))
            })
            .ok_or_else(|| CoreError::UnknownDType(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in ALL_DTYPES {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
            if let Some(n) = d.safetensors_name() {
                assert_eq!(DType::from_safetensors_name(n), Some(d));
            }
            if let Some(id) = d.ggml_type_id() {
                assert_eq!(DType::from_ggml_type_id(id), Some(d));
                assert!(!REMOVED_GGML_TYPE_IDS.contains(&id));
            }
        }
        for id in REMOVED_GGML_TYPE_IDS {
            assert_eq!(DType::from_ggml_type_id(id), None);
        }
        assert_eq!(DType::from_ggml_type_id(43), None);
    }

    #[test]
    fn all_dtypes_is_complete_and_sorted() {
        for w in ALL_DTYPES.windows(2) {
            assert!(w[0] < w[1]);
        }
    }
}
