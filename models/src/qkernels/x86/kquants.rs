//! The K-quant kernels (Q4_K, Q6_K): the prompt tile kernel on `Q8_K` activations, with
//! the sub-blocks' scales applied in integers, and Q4_K's single-row kernel in the order
//! of llama.cpp's repacked kernel.

/// The K-quant kernels for one instruction set (`features`), `dot` being its integer
/// dot product of 32 unsigned by 32 signed bytes (`dacc` the same added to an
/// accumulator) and `wdot` its `i16` pair product added to an accumulator. Expanded by
/// `kernels!` inside each instruction set's module.
macro_rules! kernels_k {
    ($features:literal, $dot:ident, $dacc:ident, $wdot:ident) => {
        /// The 8 sub-block dot products of a Q4_K super-block with an activation
        /// super-block (exact integers).
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q4k_dots(sb: *const u8, a: &Q8KBlock) -> [i32; 8] {
            let low4 = _mm256_set1_epi8(0x0F);
            let mut d = [_mm256_setzero_si256(); 8];
            for c in 0..4 {
                let raw = _mm256_loadu_si256(sb.add(16 + 32 * c) as *const __m256i);
                let lo = _mm256_and_si256(raw, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
                let a0 = _mm256_loadu_si256(a.qs.as_ptr().add(64 * c) as *const __m256i);
                let a1 = _mm256_loadu_si256(a.qs.as_ptr().add(64 * c + 32) as *const __m256i);
                d[2 * c] = $dot!(lo, a0);
                d[2 * c + 1] = $dot!(hi, a1);
            }
            // Lanes of sub-block j summed: [0..3] then [4..7] by two rounds of
            // horizontal adds and one add of the 128-bit halves.
            let h0 =
                _mm256_hadd_epi32(_mm256_hadd_epi32(d[0], d[1]), _mm256_hadd_epi32(d[2], d[3]));
            let h1 =
                _mm256_hadd_epi32(_mm256_hadd_epi32(d[4], d[5]), _mm256_hadd_epi32(d[6], d[7]));
            let s0 = _mm_add_epi32(_mm256_castsi256_si128(h0), _mm256_extracti128_si256(h0, 1));
            let s1 = _mm_add_epi32(_mm256_castsi256_si128(h1), _mm256_extracti128_si256(h1, 1));
            let mut out = [0i32; 8];
            _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, _mm256_set_m128i(s1, s0));
            out
        }

        /// Q4_K rows against one activation row in [`q4k_step`]'s
        /// order; four rows' chains interleaved so their latencies overlap.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn rows_q4k(
            w: *const u8,
            row_bytes: usize,
            act: &[Q8KBlock],
            dst: &mut [f32],
        ) {
            const G: usize = 4;
            let n = dst.len();
            let mut r0 = 0;
            while r0 < n {
                // The last group repeats its last row where fewer than G are left.
                let rows: [usize; G] = std::array::from_fn(|i| (r0 + i).min(n - 1));
                let ahead = prefetch_distance(row_bytes).max(G * row_bytes);
                prefetch(w.wrapping_add(r0 * row_bytes + ahead), G * row_bytes);
                let mut acc = [0f32; G];
                for (b, a) in act.iter().enumerate() {
                    let sbs: [*const u8; G] = rows.map(|r| w.add(r * row_bytes + b * 144));
                    let dots = sbs.map(|sb| q4k_dots(sb, a));
                    let scales =
                        sbs.map(|sb| q4k_scales_mins(std::slice::from_raw_parts(sb.add(4), 12)));
                    let d = sbs.map(|sb| f16(sb));
                    let dmin = sbs.map(|sb| f16(sb.add(2)));
                    for j in 0..8 {
                        let bsum = q8k_sub_sum(a, j);
                        for i in 0..G {
                            let (sc, mn) = (scales[i].0[j], scales[i].1[j]);
                            acc[i] = q4k_step(
                                acc[i],
                                dots[i][j],
                                d[i] * sc as f32,
                                dmin[i] * mn as f32,
                                a.d,
                                bsum,
                            );
                        }
                    }
                }
                for i in 0..G.min(n - r0) {
                    dst[r0 + i] = acc[i];
                }
                r0 += G;
            }
        }

        /// [`TILE`] activation rows against Q4_K weight rows, each row's sum in exactly
        /// [`rows_q4k`]'s order (llama.cpp's single-row order, which the batched
        /// forward keeps for every row): the same exact integer dot of each 32-value
        /// sub-block, found for the eight rows at once as the 32-value tile kernel
        /// does ([`OrderedKTile`]: lanes `(row, half)`, the halves then added), and
        /// the same two fused steps of [`q4k_step`] per sub-block, lane by lane.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn rows_q4k_tile(
            w: *const u8,
            row_bytes: usize,
            act: &[OrderedKTile],
            dst: &mut [[f32; TILE]],
        ) {
            let low4 = _mm256_set1_epi8(0x0F);
            for (r, out) in dst.iter_mut().enumerate() {
                let row = w.add(r * row_bytes);
                prefetch(row.wrapping_add(prefetch_distance(row_bytes)), row_bytes);
                let mut acc = _mm256_setzero_ps();
                for (b, t) in act.iter().enumerate() {
                    let sb = row.add(b * 144);
                    let (sc, mn) = q4k_scales_mins(std::slice::from_raw_parts(sb.add(4), 12));
                    let (d, dmin) = (f16(sb), f16(sb.add(2)));
                    let dall = _mm256_load_ps(t.d.as_ptr());
                    for c in 0..4 {
                        let raw = _mm256_loadu_si256(sb.add(16 + 32 * c) as *const __m256i);
                        let halves = [
                            _mm256_and_si256(raw, low4),
                            _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4),
                        ];
                        for (h, &u) in halves.iter().enumerate() {
                            let j = 2 * c + h;
                            let sums = tile_dots(u, u, false, &t.qt[j]);
                            // Rows 0-3 from the halves of sums[0], 4-7 from sums[1].
                            let low = _mm256_permute2x128_si256(sums[0], sums[1], 0x20);
                            let high = _mm256_permute2x128_si256(sums[0], sums[1], 0x31);
                            let dots = _mm256_cvtepi32_ps(_mm256_add_epi32(low, high));
                            let scale = _mm256_set1_ps(d * sc[j] as f32);
                            acc = _mm256_fmadd_ps(dots, _mm256_mul_ps(scale, dall), acc);
                            let bsum = _mm256_load_ps(t.bsum[j].as_ptr());
                            let min = _mm256_set1_ps(-(dmin * mn[j] as f32));
                            acc = _mm256_fmadd_ps(min, _mm256_mul_ps(dall, bsum), acc);
                        }
                    }
                }
                _mm256_storeu_ps(out.as_mut_ptr(), acc);
            }
        }

        /// [`TILE`] activation rows against `dst.len()` K-quant weight rows, a
        /// super-block at a time as llama.cpp's K-quant kernels do: the sub-blocks'
        /// 4- or 6-bit values multiplied with the 8-bit activations in pairs
        /// (`vpmaddubsw`, unsigned by signed, to i16), weighed by their integer
        /// scales in i32 (`vpmaddwd` / `vpdpwssd`), and converted to float once per
        /// super-block and row. The mins (Q4_K) and the -32 offset (Q6_K) are
        /// integer products of the weight's scales with the activations' partial
        /// sums, for all rows at once.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn rows_ktile<const F: u8>(
            w: *const u8,
            row_bytes: usize,
            act: &[KTile],
            dst: &mut [[f32; TILE]],
        ) {
            const SUBS: usize = QK_K / QK;
            let low4 = _mm256_set1_epi8(0x0F);
            let bb = if F == Q4K { 144 } else { 210 };
            for (r, d) in dst.iter_mut().enumerate() {
                let row = w.add(r * row_bytes);
                prefetch(row.wrapping_add(prefetch_distance(row_bytes)), row_bytes);
                let mut acc = [_mm256_setzero_ps(); TILE];
                // The min / offset terms of the rows, one lane each.
                let mut off = _mm256_setzero_ps();
                for (b, t) in act.iter().enumerate() {
                    let sb = row.add(b * bb);
                    let mut u = [_mm256_setzero_si256(); SUBS];
                    let mut sc = [_mm256_setzero_si256(); SUBS];
                    let da = _mm256_loadu_ps(t.d.as_ptr());
                    let dd;
                    if F == Q4K {
                        let scales = std::slice::from_raw_parts(sb.add(4), 12);
                        let mut mins = _mm256_setzero_si256();
                        for p in 0..SUBS / 2 {
                            let (s0, m0) = q4k_scale_min(scales, 2 * p);
                            let (s1, m1) = q4k_scale_min(scales, 2 * p + 1);
                            sc[2 * p] = _mm256_set1_epi16(s0 as i16);
                            sc[2 * p + 1] = _mm256_set1_epi16(s1 as i16);
                            let raw = _mm256_loadu_si256(sb.add(16 + p * 32) as *const __m256i);
                            u[2 * p] = _mm256_and_si256(raw, low4);
                            u[2 * p + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
                            let pair = _mm256_set1_epi32((m0 as i32) | (m1 as i32) << 16);
                            let sums = _mm256_load_si256(t.sums32[p].as_ptr() as *const __m256i);
                            mins = $wdot!(mins, sums, pair);
                        }
                        dd = _mm256_mul_ps(_mm256_set1_ps(f16(sb)), da);
                        let dmin = _mm256_mul_ps(_mm256_set1_ps(f16(sb.add(2))), da);
                        off = _mm256_fnmadd_ps(dmin, _mm256_cvtepi32_ps(mins), off);
                    } else {
                        let scales = sb.add(192) as *const i8;
                        let mut corr = _mm256_setzero_si256();
                        for j in 0..SUBS {
                            let (h, q) = (j / 4, j % 4);
                            let ql =
                                _mm256_loadu_si256(sb.add(h * 64 + (q % 2) * 32) as *const __m256i);
                            let ql = if q < 2 { ql } else { _mm256_srli_epi16(ql, 4) };
                            let qh = _mm256_loadu_si256(sb.add(128 + h * 32) as *const __m256i);
                            let qh = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * q as i32));
                            let high =
                                _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(3)), 4);
                            u[j] = _mm256_or_si256(_mm256_and_si256(ql, low4), high);
                            let (lo, hi) =
                                (*scales.add(2 * j) as i16, *scales.add(2 * j + 1) as i16);
                            // maddubs lanes 0-7 hold values 0-15, lanes 8-15 values 16-31.
                            sc[j] = _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo));
                            let pair = _mm256_set1_epi32((lo as u16 as i32) | (hi as i32) << 16);
                            let sums = _mm256_load_si256(t.sums16[j].as_ptr() as *const __m256i);
                            corr = $wdot!(corr, sums, pair);
                        }
                        // Values are stored plus 32: take 32 * scale * sum back off.
                        dd = _mm256_mul_ps(_mm256_set1_ps(f16(sb.add(208))), da);
                        let d32 = _mm256_mul_ps(dd, _mm256_set1_ps(32.0));
                        off = _mm256_fnmadd_ps(d32, _mm256_cvtepi32_ps(corr), off);
                    }
                    for i in 0..TILE {
                        let mut isum = _mm256_setzero_si256();
                        for j in 0..SUBS {
                            let a = _mm256_load_si256(t.qs[j][i].as_ptr() as *const __m256i);
                            isum = $wdot!(isum, _mm256_maddubs_epi16(u[j], a), sc[j]);
                        }
                        let di = _mm256_permutevar8x32_ps(dd, _mm256_set1_epi32(i as i32));
                        acc[i] = _mm256_fmadd_ps(di, _mm256_cvtepi32_ps(isum), acc[i]);
                    }
                }
                let mut offs = [0f32; TILE];
                _mm256_storeu_ps(offs.as_mut_ptr(), off);
                for i in 0..TILE {
                    d[i] = hsum(acc[i]) + offs[i];
                }
            }
        }
    };
}
