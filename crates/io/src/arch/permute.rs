//! The q/k row permutation between Hugging Face's rope layout and ggml's.
//!
//! Hugging Face's Llama rotates the two *halves* of each head's dimensions
//! (`rotate_half`); ggml's `llama` rope rotates *adjacent pairs*. So
//! `convert_hf_to_gguf.py` (`LlamaModel.permute`) reorders the output rows of
//! the q and k projections (weights and, where present, biases): it reshapes
//! the `[rows, cols]` tensor to `(n_head, 2, rows / n_head / 2, cols)`, swaps
//! axes 1 and 2 and reshapes back. In indices: output row
//! `h*d + 2*j + i` is input row `h*d + i*(d/2) + j`, with `d = rows / n_head`
//! (the head dimension), `i` in `0..2`, `j` in `0..d/2`. q uses the attention
//! head count, k the key-value head count.
//!
//! Only whole rows move, so the functions work on raw element bytes of any
//! width: f32, f16 and bf16 tensors are permuted without conversion (and so
//! is any type whose rows are whole blocks).

use super::{ArchError, Result};

/// The converter's permutation: Hugging Face row order to GGUF row order.
///
/// `bytes` holds `rows * cols` elements of `elem_size` bytes, row-major; a
/// bias is `cols = 1`. Errors (never panics) when `rows` is not a multiple of
/// `2 * n_head`, `n_head` or `elem_size` is zero, or the length does not match.
pub fn permute_rows(
    bytes: &[u8],
    elem_size: usize,
    rows: usize,
    cols: usize,
    n_head: usize,
) -> Result<Vec<u8>> {
    reorder(bytes, elem_size, rows, cols, n_head, false)
}

/// The exact inverse of [`permute_rows`]: GGUF row order back to Hugging
/// Face's. `unpermute_rows(&permute_rows(x, ..)?, ..)? == x` for every `x`.
pub fn unpermute_rows(
    bytes: &[u8],
    elem_size: usize,
    rows: usize,
    cols: usize,
    n_head: usize,
) -> Result<Vec<u8>> {
    reorder(bytes, elem_size, rows, cols, n_head, true)
}

fn reorder(
    bytes: &[u8],
    elem_size: usize,
    rows: usize,
    cols: usize,
    n_head: usize,
    inverse: bool,
) -> Result<Vec<u8>> {
    let err = |reason| ArchError::Permute {
        rows,
        cols,
        elem_size,
        n_head,
        len: bytes.len(),
        reason,
    };
    if elem_size == 0 {
        return Err(err("the element size is zero"));
    }
    if n_head == 0 {
        return Err(err("the head count is zero"));
    }
    let row_bytes = cols
        .checked_mul(elem_size)
        .ok_or_else(|| err("the size overflows"))?;
    let total = rows
        .checked_mul(row_bytes)
        .ok_or_else(|| err("the size overflows"))?;
    if total != bytes.len() {
        return Err(err("the byte length is not rows * cols * elem_size"));
    }
    let pair_heads = n_head
        .checked_mul(2)
        .ok_or_else(|| err("the size overflows"))?;
    if !rows.is_multiple_of(pair_heads) {
        return Err(err("rows is not a multiple of 2 * n_head"));
    }
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![0u8; total];
    if row_bytes == 0 {
        return Ok(out);
    }
    for h in 0..n_head {
        let base = h * head_dim;
        for i in 0..2 {
            for j in 0..half {
                // Hugging Face row (h, i, j) is GGUF row (h, j, i).
                let hf = base + i * half + j;
                let gg = base + 2 * j + i;
                let (src, dst) = if inverse { (gg, hf) } else { (hf, gg) };
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&bytes[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    Ok(out)
}
