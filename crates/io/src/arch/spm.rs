//! The part of SentencePiece's `tokenizer.model` (a `ModelProto` protocol
//! buffer) the converter reads: each piece's text, score and type.
//!
//! A hand-written reader for the three fields, so that no protobuf
//! dependency is needed: `ModelProto.pieces = 1` (repeated message), and in
//! each `SentencePiece`: `piece = 1` (string), `score = 2` (float),
//! `type = 3` (enum, default NORMAL). Every other field is skipped by its
//! wire type. Lengths are checked against the input; nothing is allocated
//! beyond the pieces themselves.

use super::{ArchError, Result};

/// `SentencePiece.Type` values.
pub(crate) const NORMAL: i32 = 1;
pub(crate) const UNKNOWN: i32 = 2;
pub(crate) const CONTROL: i32 = 3;
pub(crate) const UNUSED: i32 = 5;
pub(crate) const BYTE: i32 = 6;

/// One piece of the model.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Piece {
    pub(crate) piece: String,
    pub(crate) score: f32,
    pub(crate) kind: i32,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` in the whole file, for error messages.
    base: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: &'static str) -> ArchError {
        ArchError::SentencePiece {
            offset: self.base + self.pos,
            reason,
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| self.err("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn bytes(&mut self, n: u64) -> Result<&'a [u8]> {
        let n = usize::try_from(n).map_err(|_| self.err("length past the end"))?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err("length past the end"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Reads a tag; returns (field number, wire type).
    fn tag(&mut self) -> Result<(u64, u8)> {
        let t = self.varint()?;
        Ok((t >> 3, (t & 7) as u8))
    }

    fn skip(&mut self, wire: u8) -> Result<()> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.bytes(8).map(drop),
            2 => {
                let n = self.varint()?;
                self.bytes(n).map(drop)
            }
            5 => self.bytes(4).map(drop),
            _ => Err(self.err("unsupported protobuf wire type")),
        }
    }
}

/// Parses the pieces of a `tokenizer.model`.
pub(crate) fn parse_pieces(model: &[u8]) -> Result<Vec<Piece>> {
    let mut r = Reader {
        buf: model,
        pos: 0,
        base: 0,
    };
    let mut pieces = Vec::new();
    while !r.done() {
        let (field, wire) = r.tag()?;
        if field == 1 && wire == 2 {
            let n = r.varint()?;
            let base = r.pos;
            let msg = r.bytes(n)?;
            pieces.push(parse_piece(Reader {
                buf: msg,
                pos: 0,
                base,
            })?);
        } else {
            r.skip(wire)?;
        }
    }
    if pieces.is_empty() {
        return Err(ArchError::SentencePiece {
            offset: 0,
            reason: "no pieces",
        });
    }
    Ok(pieces)
}

fn parse_piece(mut r: Reader<'_>) -> Result<Piece> {
    let mut p = Piece {
        piece: String::new(),
        score: 0.0,
        kind: NORMAL,
    };
    while !r.done() {
        let (field, wire) = r.tag()?;
        match (field, wire) {
            (1, 2) => {
                let n = r.varint()?;
                let b = r.bytes(n)?;
                p.piece = std::str::from_utf8(b)
                    .map_err(|_| r.err("piece is not UTF-8"))?
                    .to_owned();
            }
            (2, 5) => {
                let b = r.bytes(4)?;
                p.score = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            (3, 0) => {
                // An enum is an int32 varint (negative values sign-extended to 64 bits).
                p.kind = r.varint()? as i32;
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(p)
}
