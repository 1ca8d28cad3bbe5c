//! Tensor shapes, row-major and outermost dimension first (PyTorch's order).

use std::fmt;

use crate::dtype::{DType, Packing};
use crate::error::CoreError;

/// A tensor shape: dimensions in row-major order, outermost first.
///
/// `[]` is a 0-d (scalar) shape with one element; any zero dimension gives an
/// empty tensor. Element and byte counts are checked: a shape read from a
/// hostile header can name more elements than `usize` holds, and that is an
/// error, never a wrap-around.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    /// A shape from its dimensions, outermost first.
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }

    /// The 0-d shape of a scalar.
    pub fn scalar() -> Self {
        Shape(Vec::new())
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Innermost dimension (the row length), or 1 for a 0-d shape.
    pub fn row_len(&self) -> usize {
        self.0.last().copied().unwrap_or(1)
    }

    /// Number of elements, checked: `Err(Overflow)` if the product does not
    /// fit in `usize`.
    pub fn elem_count(&self) -> Result<usize, CoreError> {
        checked_product(&self.0)
    }

    /// Number of rows (all dimensions but the innermost), checked.
    pub fn row_count(&self) -> Result<usize, CoreError> {
        match self.0.split_last() {
            None => Ok(1),
            Some((_, outer)) => checked_product(outer),
        }
    }

    /// The exact number of bytes a contiguous tensor of this shape and dtype
    /// occupies, checked.
    ///
    /// Block types require the innermost dimension to be a whole number of
    /// blocks (as ggml does); sub-byte types require the whole tensor to fill
    /// whole bytes (as the `safetensors` crate does).
    pub fn byte_len(&self, dtype: DType) -> Result<usize, CoreError> {
        let elems = self.elem_count()?;
        match dtype.packing() {
            Packing::Block { elems: block, .. } => {
                let row = self.row_len();
                if !row.is_multiple_of(block) {
                    return Err(CoreError::NotWholeBlocks {
                        dtype,
                        elems: row,
                        block,
                    });
                }
                if elems == 0 {
                    return Ok(0);
                }
                let row_bytes = dtype.bytes_for_elems(row)?;
                row_bytes
                    .checked_mul(self.row_count()?)
                    .ok_or(CoreError::Overflow)
            }
            _ => dtype.bytes_for_elems(elems),
        }
    }
}

/// The product of `dims`, checked. Any zero dimension makes the product 0,
/// even when a partial product of the other dimensions would overflow.
fn checked_product(dims: &[usize]) -> Result<usize, CoreError> {
    if dims.contains(&0) {
        return Ok(0);
    }
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(CoreError::Overflow)
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}

impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}

impl AsRef<[usize]> for Shape {
    fn as_ref(&self) -> &[usize] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(Shape::scalar().elem_count().unwrap(), 1);
        assert_eq!(Shape::new([0, 5]).elem_count().unwrap(), 0);
        assert_eq!(Shape::new([3, 4]).byte_len(DType::F32).unwrap(), 48);
        assert_eq!(
            Shape::new([2, 64]).byte_len(DType::Q8_0).unwrap(),
            2 * 2 * 34
        );
        assert_eq!(
            Shape::new([5]).byte_len(DType::F4),
            Err(CoreError::NotWholeBytes {
                dtype: DType::F4,
                elems: 5
            })
        );
        assert_eq!(Shape::new([2, 3]).byte_len(DType::F4).unwrap(), 3);
        assert_eq!(Shape::new([4]).byte_len(DType::F6_E2M3).unwrap(), 3);
        assert!(matches!(
            Shape::new([2, 33]).byte_len(DType::Q4_0),
            Err(CoreError::NotWholeBlocks { .. })
        ));
        assert_eq!(
            Shape::new([usize::MAX, 2]).elem_count(),
            Err(CoreError::Overflow)
        );
        assert_eq!(
            Shape::new([usize::MAX / 2]).byte_len(DType::F32),
            Err(CoreError::Overflow)
        );
        // A zero outer dimension makes an empty tensor even with a huge row.
        assert_eq!(Shape::new([0, usize::MAX]).byte_len(DType::F32).unwrap(), 0);
    }
}
