//! The kernels of the formats with blocks of 32 values (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): the
//! tile kernel, `TILE` (8) activation rows against each decoded weight block, and the
//! single-row kernel that sums in exactly its order (batch invariance).

/// The 32-value kernels for one instruction set (`features`), `dot` and `dacc` being
/// its integer dot product of 32 unsigned by 32 signed bytes (alone, and added to an
/// accumulator). Expanded by `kernels!` inside each instruction set's module.
macro_rules! kernels_32 {
    ($features:literal, $dot:ident, $dacc:ident, $q8_unsigned:literal) => {
        #[target_feature(enable = $features)]
        pub(super) unsafe fn dot_rows(
            format: Format,
            w: &[u8],
            row_bytes: usize,
            act: &[ActBlock],
            dst: &mut [f32],
        ) {
            let base = w.as_ptr();
            let ahead = prefetch_distance(row_bytes);
            for (r, d) in dst.iter_mut().enumerate() {
                let row = base.add(r * row_bytes);
                prefetch(row.wrapping_add(ahead), row_bytes);
                *d = match format {
                    Format::Q4_0 => row_ordered::<Q4_0>(row, act),
                    Format::Q4_1 => row_ordered::<Q4_1>(row, act),
                    Format::Q5_0 => row_ordered::<Q5_0>(row, act),
                    Format::Q5_1 => row_ordered::<Q5_1>(row, act),
                    Format::Q8_0 => row_ordered::<Q8_0>(row, act),
                    Format::Q4K | Format::Q6K => {
                        unreachable!("K-quants take matmul_k")
                    }
                };
            }
        }

        #[target_feature(enable = $features)]
        pub(super) unsafe fn dot_rows_tile(
            format: Format,
            w: &[u8],
            row_bytes: usize,
            act: &[ActTile],
            dst: &mut [[f32; TILE]],
        ) {
            let w = w.as_ptr();
            match format {
                Format::Q4_0 => rows_tile::<Q4_0>(w, row_bytes, act, dst),
                Format::Q4_1 => rows_tile::<Q4_1>(w, row_bytes, act, dst),
                Format::Q5_0 => rows_tile::<Q5_0>(w, row_bytes, act, dst),
                Format::Q5_1 => rows_tile::<Q5_1>(w, row_bytes, act, dst),
                Format::Q8_0 => rows_tile::<Q8_0>(w, row_bytes, act, dst),
                Format::Q4K | Format::Q6K => {
                    unreachable!("K-quants take matmul_k")
                }
            }
        }

        /// One weight block as unsigned bytes (`u`), the raw signed bytes for Q8_0's
        /// sign trick (`q`), the block scale and the coefficient of the activation
        /// sum (the offset of the 4- and 5-bit formats).
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn decode<const F: u8>(p: *const u8) -> (__m256i, __m256i, f32, f32) {
            match F {
                Q4_0 => {
                    let d = f16(p);
                    let u = nibbles(p.add(2));
                    (u, u, d, -8.0 * d)
                }
                Q4_1 => {
                    let u = nibbles(p.add(4));
                    (u, u, f16(p), f16(p.add(2)))
                }
                Q5_0 => {
                    let d = f16(p);
                    let u = _mm256_or_si256(nibbles(p.add(6)), q5_high(p.add(2)));
                    (u, u, d, -16.0 * d)
                }
                Q5_1 => {
                    let u = _mm256_or_si256(nibbles(p.add(8)), q5_high(p.add(4)));
                    (u, u, f16(p), f16(p.add(2)))
                }
                _ => {
                    let q = _mm256_loadu_si256(p.add(2) as *const __m256i);
                    (_mm256_sign_epi8(q, q), q, f16(p), 0.0)
                }
            }
        }

        /// [`TILE`] activation rows against `dst.len()` weight rows of format `F`
        /// (blocks of 32 values): each decoded block's integer dots with the rows at
        /// once ([`tile_dots`]; Q8_0 with VNNI: its bytes + 128, less
        /// [`ActTile::hs`]). Two accumulators hold rows 0-3 and 4-7 (each row twice,
        /// once per half), scaled by the rows' scales in one multiply each: no per-row
        /// broadcast and one horizontal step per weight row.
        #[target_feature(enable = $features)]
        unsafe fn rows_tile<const F: u8>(
            w: *const u8,
            row_bytes: usize,
            act: &[ActTile],
            dst: &mut [[f32; TILE]],
        ) {
            // Q8_0 with VNNI: the weight's bytes + 128 as unsigned values (`vpdpbusd`
            // cannot saturate), the rows' sums times 128 taken back out after; with
            // AVX2 (whose `vpmaddubsw` would), the sign moved onto the rows.
            let unsigned_q8 = F == Q8_0 && $q8_unsigned;
            let signed = F == Q8_0 && !unsigned_q8;
            let bb = block_bytes_32(F);
            let n = act.len();
            let ahead = prefetch_distance(row_bytes);
            for (r, d) in dst.iter_mut().enumerate() {
                let row = w.add(r * row_bytes);
                prefetch(row.wrapping_add(ahead), row_bytes);
                // acc[j][g]: blocks b = j (mod 4), rows 4g..4g+3 (lanes: row, half).
                let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                // The offset terms of the rows, by the same phases.
                let mut off = [_mm256_setzero_ps(); 4];
                macro_rules! block {
                    ($b:expr, $j:literal) => {
                        let t = &act[$b];
                        let (u, q, dw, offc) = decode::<F>(row.add($b * bb));
                        let sums = if unsigned_q8 {
                            let u = _mm256_xor_si256(q, _mm256_set1_epi8(-128));
                            let sums = tile_dots(u, q, false, &t.qt);
                            let hs =
                                |g: usize| _mm256_loadu_si256(t.hs[g].as_ptr() as *const __m256i);
                            [
                                _mm256_sub_epi32(sums[0], hs(0)),
                                _mm256_sub_epi32(sums[1], hs(1)),
                            ]
                        } else {
                            tile_dots(u, q, signed, &t.qt)
                        };
                        let dw = _mm256_set1_ps(dw);
                        for g in 0..2 {
                            let scale = _mm256_mul_ps(dw, _mm256_load_ps(t.d[g].as_ptr()));
                            acc[$j][g] =
                                _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums[g]), acc[$j][g]);
                        }
                        if F != Q8_0 {
                            off[$j] = _mm256_fmadd_ps(
                                _mm256_set1_ps(offc),
                                _mm256_load_ps(t.s.as_ptr()),
                                off[$j],
                            );
                        }
                    };
                }
                let mut b = 0;
                while b + 4 <= n {
                    block!(b, 0);
                    block!(b + 1, 1);
                    block!(b + 2, 2);
                    block!(b + 3, 3);
                    b += 4;
                }
                if b < n {
                    block!(b, 0);
                }
                if b + 1 < n {
                    block!(b + 1, 1);
                }
                if b + 2 < n {
                    block!(b + 2, 2);
                }
                // Per row: ((phases 0+1) + (2+3)) of each half, the halves added, then
                // the offsets' phases likewise (row_ordered sums the same way).
                macro_rules! phases {
                    ($v0:expr, $v1:expr, $v2:expr, $v3:expr) => {
                        _mm256_add_ps(_mm256_add_ps($v0, $v1), _mm256_add_ps($v2, $v3))
                    };
                }
                let s0 = phases!(acc[0][0], acc[1][0], acc[2][0], acc[3][0]);
                let s1 = phases!(acc[0][1], acc[1][1], acc[2][1], acc[3][1]);
                // Rows 0-3 from the halves of s0, rows 4-7 from those of s1.
                let low = _mm256_permute2f128_ps(s0, s1, 0x20);
                let high = _mm256_permute2f128_ps(s0, s1, 0x31);
                _mm256_storeu_ps(
                    d.as_mut_ptr(),
                    _mm256_add_ps(
                        _mm256_add_ps(low, high),
                        phases!(off[0], off[1], off[2], off[3]),
                    ),
                );
            }
        }

        /// Q5_0's and Q5_1's fifth bits (`qh`, 32 bits) as 0x10 in the byte of each value set.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q5_high(qh: *const u8) -> __m256i {
            // Byte j of the result is 0x10 where bit j of `qh` is set: replicate byte
            // j / 8 of `qh` into byte j, set every other bit, compare with all ones.
            let spread = _mm256_setr_epi64x(
                0x0000_0000_0000_0000,
                0x0101_0101_0101_0101,
                0x0202_0202_0202_0202,
                0x0303_0303_0303_0303,
            );
            let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
            let qh = (qh as *const i32).read_unaligned();
            let spread = _mm256_shuffle_epi8(_mm256_set1_epi32(qh), spread);
            let high = _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1));
            _mm256_and_si256(high, _mm256_set1_epi8(0x10))
        }

        /// 16 bytes of nibbles to 32 bytes: low nibbles are values 0..16, high 16..32.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn nibbles(p: *const u8) -> __m256i {
            let raw = _mm_loadu_si128(p as *const __m128i);
            _mm256_and_si256(
                _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw),
                _mm256_set1_epi8(0x0F),
            )
        }

        /// One weight row against one activation row, summed in exactly the order
        /// of [`rows_tile`] for each of its rows (see there), so that a prompt gives
        /// the same logits whether it goes in at once or a token at a time: four
        /// blocks at a time, their dot products reduced to the sums of each half
        /// (`vphaddd`: lanes `[L0..L3 | H0..H3]`), scaled into the four phases.
        #[target_feature(enable = $features)]
        unsafe fn row_ordered<const F: u8>(row: *const u8, act: &[ActBlock]) -> f32 {
            let signed = F == Q8_0;
            let bb = block_bytes_32(F);
            let n = act.len();
            let mut acc = _mm256_setzero_ps();
            let mut off = _mm_setzero_ps();
            let mut b = 0;
            while b < n {
                let mut dots = [_mm256_setzero_si256(); 4];
                let (mut k, mut o, mut s) = ([0f32; 4], [0f32; 4], [0f32; 4]);
                for j in 0..4.min(n - b) {
                    let a = &act[b + j];
                    let (u, q, dw, offc) = decode::<F>(row.add((b + j) * bb));
                    let y = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
                    let y = if signed { _mm256_sign_epi8(y, q) } else { y };
                    dots[j] = $dot!(u, y);
                    k[j] = dw * a.d;
                    o[j] = offc;
                    s[j] = a.s;
                }
                let halves = _mm256_hadd_epi32(
                    _mm256_hadd_epi32(dots[0], dots[1]),
                    _mm256_hadd_epi32(dots[2], dots[3]),
                );
                let k = _mm_loadu_ps(k.as_ptr());
                acc = _mm256_fmadd_ps(_mm256_set_m128(k, k), _mm256_cvtepi32_ps(halves), acc);
                if !signed {
                    off = _mm_fmadd_ps(_mm_loadu_ps(o.as_ptr()), _mm_loadu_ps(s.as_ptr()), off);
                }
                b += 4;
            }
            // [(L0+L1)+(L2+L3), (H0+H1)+(H2+H3), ..] as rows_tile combines the phases.
            let h = _mm_hadd_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
            let h = _mm_hadd_ps(h, h);
            let o = _mm_hadd_ps(off, off);
            let o = _mm_hadd_ps(o, o);
            (_mm_cvtss_f32(h) + _mm_cvtss_f32(_mm_shuffle_ps(h, h, 1))) + _mm_cvtss_f32(o)
        }
    };
}
