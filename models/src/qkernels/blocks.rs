//! The weight formats with a kernel here, in GGUF's block layout: sizes, and the
//! unpacking of the K-quants' sub-blocks and 6-bit scales that the scalar reference and
//! the SIMD kernels share.

/// Values per block in every format here.
pub const QK: usize = 32;

/// Values per K-quant super-block.
pub const QK_K: usize = 256;

/// The weight formats with a kernel here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `d: f16, qs: [u8; 16]`: value = d * (nibble - 8).
    Q4_0,
    /// `d: f16, m: f16, qs: [u8; 16]`: value = d * nibble + m.
    Q4_1,
    /// `d: f16, qh: u32, qs: [u8; 16]`: value = d * ((nibble | bit << 4) - 16).
    Q5_0,
    /// `d: f16, m: f16, qh: u32, qs: [u8; 16]`: value = d * (nibble | bit << 4) + m.
    Q5_1,
    /// `d: f16, qs: [i8; 32]`: value = d * q.
    Q8_0,
    /// Super-blocks of 256: `d, dmin: f16, scales: [u8; 12], qs: [u8; 128]`; sub-block
    /// `j` of 32 has 6-bit scale `sc` and min `m`: value = d * sc * nibble - dmin * m.
    /// Prompts only (see [`Format::prompt_only`]).
    Q4K,
    /// Super-blocks of 256: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`;
    /// value = d * scale (one per 16 values) * (6-bit q - 32). Prompts only.
    Q6K,
}

impl Format {
    pub fn from_ggml(dtype: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType as G;
        match dtype {
            G::Q4_0 => Some(Self::Q4_0),
            G::Q4_1 => Some(Self::Q4_1),
            G::Q5_0 => Some(Self::Q5_0),
            G::Q5_1 => Some(Self::Q5_1),
            G::Q8_0 => Some(Self::Q8_0),
            G::Q4K => Some(Self::Q4K),
            G::Q6K => Some(Self::Q6K),
            _ => None,
        }
    }

    /// Values per block of the format (a K-quant's super-block).
    pub const fn block_values(self) -> usize {
        match self {
            Self::Q4K | Self::Q6K => 256,
            _ => QK,
        }
    }

    /// Bytes per block of [`Format::block_values`] values.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q6K => 210,
        }
    }

    /// Bytes of a row of `values` values (a whole number of blocks).
    pub const fn row_bytes(self, values: usize) -> usize {
        values / self.block_values() * self.block_bytes()
    }

    /// Whether zoo runs this format only for prompts (many rows at once), leaving
    /// single tokens to candle's kernels: Q6_K, whose single-token dot products in
    /// candle sum as llama.cpp's do (the conformance suite holds quantized models to
    /// llama.cpp's results, and greedy decoding is sensitive to the order of sums).
    /// Q4_K single tokens run here in that order ([`super::dot_q4k_ordered`]), so that candle
    /// never builds its repacked copy of the weights.
    pub const fn prompt_only(self) -> bool {
        matches!(self, Self::Q6K)
    }
}

/// A K-quant sub-block of 32 values decoded for the scalar reference: the values (as
/// multiplied with the activations), the scales of its two halves and the coefficient
/// of the activation sum.
pub(super) fn k_sub_block(format: Format, sb: &[u8], j: usize) -> ([i32; QK], f32, f32, f32) {
    let mut v = [0i32; QK];
    match format {
        Format::Q4K => {
            let d = f16_to_f32(u16::from_le_bytes([sb[0], sb[1]]));
            let dmin = f16_to_f32(u16::from_le_bytes([sb[2], sb[3]]));
            let (sc, m) = q4k_scale_min(&sb[4..16], j);
            let qs = &sb[16 + (j / 2) * 32..][..32];
            for (x, &q) in v.iter_mut().zip(qs) {
                *x = if j.is_multiple_of(2) {
                    q & 0x0F
                } else {
                    q >> 4
                } as i32;
            }
            (v, d * sc as f32, d * sc as f32, -dmin * m as f32)
        }
        Format::Q6K => {
            let (h, q) = (j / 4, j % 4);
            let ql = &sb[h * 64 + (q % 2) * 32..][..32];
            let qh = &sb[128 + h * 32..][..32];
            let sc = &sb[192..208];
            let d = f16_to_f32(u16::from_le_bytes([sb[208], sb[209]]));
            for (l, x) in v.iter_mut().enumerate() {
                let low = if q < 2 { ql[l] & 0x0F } else { ql[l] >> 4 };
                let high = (qh[l] >> (2 * q)) & 3;
                *x = (low | high << 4) as i32 - 32;
            }
            let (lo, hi) = (sc[h * 8 + 2 * q] as i8, sc[h * 8 + 2 * q + 1] as i8);
            (v, d * lo as f32, d * hi as f32, 0.0)
        }
        _ => unreachable!("not a K-quant"),
    }
}

/// Q4_K's 6-bit scale and min of sub-block `j` from the 12 packed bytes.
pub(super) fn q4k_scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// All 8 scales and mins of a Q4_K super-block from its 12 packed bytes at once, with
/// 32-bit masks as llama.cpp's x86 kernels unpack them (the same values as
/// [`q4k_scale_min`] for each `j`).
pub(super) fn q4k_scales_mins(scales: &[u8]) -> ([u8; 8], [u8; 8]) {
    const M6: u32 = 0x3f3f_3f3f;
    const M4: u32 = 0x0f0f_0f0f;
    const M2: u32 = 0x0303_0303;
    let word = |i: usize| {
        u32::from_le_bytes([
            scales[4 * i],
            scales[4 * i + 1],
            scales[4 * i + 2],
            scales[4 * i + 3],
        ])
    };
    let (u0, u1, u2) = (word(0), word(1), word(2));
    let sc_hi = (u2 & M4) | (((u0 >> 6) & M2) << 4);
    let mn_hi = ((u2 >> 4) & M4) | (((u1 >> 6) & M2) << 4);
    let join = |lo: u32, hi: u32| (lo as u64 | (hi as u64) << 32).to_le_bytes();
    (join(u0 & M6, sc_hi), join(u1 & M6, mn_hi))
}

pub(super) fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4k_scales_unpack_at_once_as_one_by_one() {
        let mut state = 0x1234_5678_u32;
        for _ in 0..2000 {
            let bytes: [u8; 12] = std::array::from_fn(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            });
            let (sc, mn) = q4k_scales_mins(&bytes);
            for j in 0..8 {
                assert_eq!((sc[j], mn[j]), q4k_scale_min(&bytes, j), "{bytes:?} {j}");
            }
        }
    }
}
