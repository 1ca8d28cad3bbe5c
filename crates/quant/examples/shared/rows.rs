//! Rows shared by the timing examples (`speed`, `ggml_inproc`), included
//! with `#[path]`.

use weightkit_core::DType;
use weightkit_quant::{QuantError, row_size};

/// A row of `n` values of a type without a quantizer: xorshift bytes, with
/// every super-block scale set to `0.01` (for IQ1_M, whose f16 scale is
/// spread over the top nibbles of its four scale words, in those nibbles).
pub(crate) fn random_row(dtype: DType, n: usize) -> Result<Vec<u8>, QuantError> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut q: Vec<u8> = (0..row_size(dtype, n)?)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect();
    let d = half::f16::from_f32(0.01).to_bits();
    for blk in q.chunks_exact_mut(dtype.block_bytes()) {
        if dtype == DType::IQ1_M {
            for k in 0..4 {
                let hi = &mut blk[48 + 2 * k + 1];
                *hi = (*hi & 0x0f) | ((((d >> (4 * k)) & 0xf) as u8) << 4);
            }
        } else {
            blk[..2].copy_from_slice(&d.to_le_bytes());
        }
    }
    Ok(q)
}
