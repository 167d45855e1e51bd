//! The quantized projection, [`QLinear`]: which kernel multiplies a quantized weight
//! with the activations (zoo's, candle's, or an f32 product for prompts).

use candle_core::quantized::QMatMul;
use candle_core::{DType, Module, Result, Tensor};

/// Rows from which [`QLinear`] treats a product as a prompt: Q6_K through zoo's
/// kernels, formats without a zoo kernel dequantized to f32. (Q4_K changes kernels at
/// the same count: [`crate::qkernels::K_TILE_ROWS`].)
pub const PROMPT_GEMM_ROWS: usize = crate::qkernels::K_TILE_ROWS;

/// A quantized projection. The activations are quantized to 8 bits per block, as
/// llama.cpp does, and multiplied with the weight blocks in integers: by zoo's own SIMD
/// kernels ([`crate::qkernels`]) for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q4_K (prompts eight rows
/// at a time, each weight block decoded once for the eight; Q4_K's single tokens in the
/// order of llama.cpp's repacked kernel, which the conformance suite needs, without
/// candle's repacked copy of the weights), and for Q6_K prompts of at least
/// [`PROMPT_GEMM_ROWS`] rows; by candle's quantized matmul for single tokens of Q6_K
/// (candle sums them as llama.cpp does) and for the other formats. For those other
/// formats a batch of at least [`PROMPT_GEMM_ROWS`] rows on CPU instead dequantizes the
/// weight once and runs an f32 matrix product (candle's row-by-row quantized dot
/// products are slower).
#[derive(Debug, Clone)]
pub struct QLinear {
    q: candle_core::quantized::QMatMul,
    weight: Option<std::sync::Arc<candle_core::quantized::QTensor>>,
    /// Set when zoo's kernels handle the weight's format.
    kernel: Option<crate::qkernels::Format>,
    /// Set for bf16/f16 weights kept as stored, on the CPU ([`super::half`]).
    half: Option<super::half::Half>,
    bias: Option<Tensor>,
}

impl QLinear {
    pub fn new(t: std::sync::Arc<candle_core::quantized::QTensor>) -> Result<Self> {
        // Half-precision weights stay as stored (candle's QMatMul would widen them to f32
        // for good: twice the memory).
        let half = super::half::Half::from_ggml(t.dtype()).filter(|_| t.device().is_cpu());
        let q = match half {
            Some(_) => candle_core::quantized::QMatMul::QTensor(t.clone()),
            None => candle_core::quantized::QMatMul::from_arc(t.clone())?,
        };
        let weight = matches!(q, candle_core::quantized::QMatMul::QTensor(_)).then_some(t);
        let kernel = weight.as_ref().and_then(|w| {
            let format = crate::qkernels::Format::from_ggml(w.dtype())?;
            let k = *w.shape().dims().last()?;
            (k % format.block_values() == 0 && w.device().is_cpu()).then_some(format)
        });
        Ok(Self {
            q,
            weight,
            kernel,
            half,
            bias: None,
        })
    }

    /// The weight's values (its rows times its columns).
    pub fn values(&self) -> usize {
        match &self.q {
            QMatMul::QTensor(t) => t.shape().elem_count(),
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.elem_count(),
        }
    }

    /// Adds `bias` (broadcast over the rows) to every product.
    pub fn with_bias(mut self, bias: Option<Tensor>) -> Self {
        self.bias = bias;
        self
    }
}

impl QLinear {
    /// The product with each row computed alone, in an order fixed by the weight's
    /// format: a row's result is the same bits whatever rows come with it (the batched
    /// forward, whose results must not depend on the batch).
    ///
    /// - zoo's kernel formats through [`crate::qkernels::matmul_rows`]: Q4_0, Q4_1,
    ///   Q5_0, Q5_1, Q8_0 as always; Q4_K in llama.cpp's single-row order for any number of
    ///   rows (the tile kernels' order differs by ~1e-5, enough to flip an 8-bit
    ///   rounding of the next layer's activations: the quantized-mistral q4_k_m fixture
    ///   came out 0.097 off llama.cpp instead of 4e-6); Q6_K in its tile kernel for any
    ///   number of rows (candle's Q6_K product is not row-invariant: the Gemma q4_k_m
    ///   fixtures' decode rows changed with the batch);
    /// - the other quantized formats through candle's product (one quantized dot
    ///   product per row and column; `forward_rows_is_batch_invariant` checks them);
    /// - f32/f16 weights: a dot product per row and column here (candle's f32 matmul
    ///   picks its blocking by the number of rows).
    pub fn forward_rows(&self, x: &Tensor) -> Result<Tensor> {
        let k = x.dim(candle_core::D::Minus1)?;
        let rows = x.elem_count() / k.max(1);
        let cpu_f32 = x.device().is_cpu() && x.dtype() == DType::F32;
        let x2 = x.flatten_to(candle_core::D::Minus2)?.contiguous()?;
        let y = match (&self.weight, self.kernel, &self.q) {
            (Some(w), _, _) if cpu_f32 && self.half.is_some() => {
                let (n, kind) = (w.shape().dims()[0], self.half.expect("checked"));
                let xs = x2.flatten_all()?.to_vec1::<f32>()?;
                let mut out = vec![0f32; rows * n];
                super::half::matmul_rows(kind, &w.data()?, (rows, k, n), &xs, &mut out);
                Tensor::from_vec(out, (rows, n), x.device())?
            }
            (Some(w), Some(format), _) if cpu_f32 => {
                let n = w.shape().dims()[0];
                let xs = x2.flatten_all()?.to_vec1::<f32>()?;
                let mut out = vec![0f32; rows * n];
                crate::qkernels::matmul_rows(
                    crate::qkernels::Level::detected(),
                    format,
                    &w.data()?,
                    (rows, k, n),
                    &xs,
                    &mut out,
                )
                .map_err(candle_core::Error::wrap)?;
                Tensor::from_vec(out, (rows, n), x.device())?
            }
            (_, _, QMatMul::Tensor(w) | QMatMul::TensorF16(w)) if cpu_f32 => {
                let w = w.to_dtype(DType::F32)?;
                let n = w.dim(0)?;
                let ws = w.flatten_all()?.to_vec1::<f32>()?;
                let xs = x2.flatten_all()?.to_vec1::<f32>()?;
                // Column `j` of every row, then transposed: parallel over the weight's rows.
                let mut out_t = vec![0f32; n * rows];
                crate::par::par_chunks_mut(
                    &mut out_t,
                    rows,
                    n * rows * k >= 1 << 15,
                    |cols, part| {
                        for (j, col) in cols.zip(part.chunks_exact_mut(rows)) {
                            let wr = &ws[j * k..(j + 1) * k];
                            for (i, o) in col.iter_mut().enumerate() {
                                *o = super::group_attn::dot(&xs[i * k..(i + 1) * k], wr);
                            }
                        }
                    },
                );
                Tensor::from_vec(out_t, (n, rows), x.device())?
                    .t()?
                    .contiguous()?
            }
            _ => self.q.forward(&x2)?,
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("k is the last dimension") = y.dim(1)?;
        y.reshape(dims)
    }
}

impl Module for QLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = x.dim(candle_core::D::Minus1)?;
        let rows = x.elem_count() / k.max(1);
        let y = match (&self.weight, self.kernel) {
            (Some(w), _)
                if self.half.is_some() && x.device().is_cpu() && x.dtype() == DType::F32 =>
            {
                half_product(w, self.half.expect("checked"), x, rows, k)?
            }
            (Some(w), Some(format))
                if x.device().is_cpu()
                    && x.dtype() == DType::F32
                    && (!format.prompt_only() || rows >= PROMPT_GEMM_ROWS) =>
            {
                let n = w.shape().dims()[0];
                let x2 = x.flatten_to(candle_core::D::Minus2)?.contiguous()?;
                let (xs, _) = x2.storage_and_layout();
                let xs = match &*xs {
                    candle_core::Storage::Cpu(s) => s.as_slice::<f32>()?,
                    _ => candle_core::bail!("QLinear: CPU input expected"),
                };
                let xs = &xs[x2.layout().start_offset()..][..rows * k];
                let mut out = vec![0f32; rows * n];
                crate::qkernels::matmul(
                    crate::qkernels::Level::detected(),
                    format,
                    &w.data()?,
                    (rows, k, n),
                    xs,
                    &mut out,
                )
                .map_err(candle_core::Error::wrap)?;
                let mut dims = x.dims().to_vec();
                *dims.last_mut().expect("k is the last dimension") = n;
                Tensor::from_vec(out, dims, x.device())?
            }
            (Some(w), _) if rows >= PROMPT_GEMM_ROWS && x.device().is_cpu() => {
                let w = w.dequantize(x.device())?;
                x.broadcast_matmul(&w.t()?)?
            }
            _ => self.q.forward(x)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `x . w^T` for half-precision `w` as stored: one dot product per row and weight row
/// for a few rows (single tokens); for a prompt, candle's f32 matrix multiply on blocks
/// of the weight's rows widened to f32, at most 16 MiB at a time.
fn half_product(
    w: &candle_core::quantized::QTensor,
    kind: super::half::Half,
    x: &Tensor,
    rows: usize,
    k: usize,
) -> Result<Tensor> {
    let n = w.shape().dims()[0];
    let data = w.data()?;
    let x2 = x.flatten_to(candle_core::D::Minus2)?.contiguous()?;
    let mut out = vec![0f32; rows * n];
    if rows < PROMPT_GEMM_ROWS {
        let xs = x2.flatten_all()?.to_vec1::<f32>()?;
        super::half::matmul_rows(kind, &data, (rows, k, n), &xs, &mut out);
    } else {
        let block = ((16 << 20) / (4 * k.max(1))).max(1);
        for from in (0..n).step_by(block) {
            let to = n.min(from + block);
            let wb = super::half::widen_rows(kind, &data, k, from, to);
            let wb = Tensor::from_vec(wb, (to - from, k), x.device())?;
            let y: Vec<f32> = x2.matmul(&wb.t()?)?.flatten_all()?.to_vec1()?;
            for (r, yr) in y.chunks_exact(to - from).enumerate() {
                out[r * n + from..r * n + to].copy_from_slice(yr);
            }
        }
    }
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("k is the last dimension") = n;
    Tensor::from_vec(out, dims, x.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::max_abs;
    use candle_core::Device;

    /// A prompt-sized batch against the same rows one at a time: for zoo's kernel
    /// formats the same 8-bit product (a tile of rows at a time, a different summation
    /// order); for Q4_K / Q6_K, zoo's kernels for the prompt and candle's for single
    /// rows, each within the 8-bit error of the exact product; for the others the f32
    /// product with the dequantized weight.
    #[test]
    fn qlinear_prompt_path_matches_the_quantized_path() {
        use candle_core::quantized::{GgmlDType, QTensor};
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (96, 256), &dev).unwrap();
        // Whole tiles of rows for the tile kernels, and rows left over.
        let x = Tensor::randn(0f32, 1.0, (1, PROMPT_GEMM_ROWS + 3, 256), &dev).unwrap();
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let q = std::sync::Arc::new(QTensor::quantize(&w, dtype).unwrap());
            let lin = QLinear::new(q.clone()).unwrap();
            let batch = lin.forward(&x).unwrap();
            // The same rows one at a time take the 8-bit quantized path.
            let rows: Vec<Tensor> = (0..x.dim(1).unwrap())
                .map(|i| lin.forward(&x.narrow(1, i, 1).unwrap()).unwrap())
                .collect();
            let single = Tensor::cat(&rows, 1).unwrap();
            // And the exact product with the dequantized weight.
            let exact = x
                .broadcast_matmul(&q.dequantize(&dev).unwrap().t().unwrap())
                .unwrap();
            let scale = max_abs(&exact);
            let d_single = max_abs(&(&single - &exact).unwrap());
            // 8-bit activations: about 1% of the largest output at most.
            assert!(
                d_single <= 2e-2 * scale,
                "{dtype:?}: quantized path off by {d_single} (scale {scale})"
            );
            let format = crate::qkernels::Format::from_ggml(dtype);
            if format.is_some_and(|f| !f.prompt_only()) {
                let d = max_abs(&(&batch - &single).unwrap());
                assert!(
                    d <= 1e-5 * scale,
                    "{dtype:?}: batch off the row-by-row product by {d}"
                );
            } else if format.is_some() {
                // Q4_K / Q6_K: zoo's 8-bit product for the prompt, candle's (8 bits per
                // 256 values) for single rows: both within the 8-bit error of exact.
                let d = max_abs(&(&batch - &exact).unwrap());
                assert!(
                    d <= 2e-2 * scale,
                    "{dtype:?}: prompt path off the exact product by {d} (scale {scale})"
                );
                assert!(
                    d > 0.0,
                    "{dtype:?}: the prompt path should be the 8-bit one"
                );
            } else {
                let d = max_abs(&(&batch - &exact).unwrap());
                assert!(
                    d <= 1e-4 * scale,
                    "{dtype:?}: prompt path off the exact product by {d}"
                );
            }
        }
    }

    /// [`QLinear::forward_rows`] on every format: rows in a batch are the same bits as
    /// each row alone (and as rows in another batch).
    #[test]
    fn forward_rows_is_batch_invariant() {
        use candle_core::quantized::{GgmlDType, QTensor};
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (40, 256), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 37, 256), &dev).unwrap();
        for dtype in [
            GgmlDType::F32,
            GgmlDType::F16,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q2K,
            GgmlDType::Q3K,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            let lin = QLinear::new(std::sync::Arc::new(QTensor::quantize(&w, dtype).unwrap()))
                .unwrap()
                .with_bias(Some(Tensor::randn(0f32, 1.0, 40, &dev).unwrap()));
            let bits = |t: Tensor| -> Vec<u32> {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            let all = bits(lin.forward_rows(&x).unwrap());
            for (start, len) in [(0, 1), (5, 1), (3, 8), (10, 27), (36, 1)] {
                let part = bits(lin.forward_rows(&x.narrow(1, start, len).unwrap()).unwrap());
                assert_eq!(
                    part,
                    all[start * 40..(start + len) * 40],
                    "{dtype:?} rows {start}+{len}"
                );
            }
            // Against the single-sequence path on the same rows: the same 8-bit
            // products, summed in another order.
            let small = x.narrow(1, 0, 13).unwrap();
            let d = max_abs(
                &(lin.forward_rows(&small).unwrap() - lin.forward(&small).unwrap()).unwrap(),
            );
            // The same kernel as the decode path (0), or another summation order (f32
            // rounding of sums of 256 products: 1e-5 of the largest output).
            let limit = match dtype {
                GgmlDType::F32 | GgmlDType::F16 | GgmlDType::Q6K => {
                    1e-5 * max_abs(&lin.forward(&small).unwrap())
                }
                _ => 0.0,
            };
            assert!(d <= limit, "{dtype:?}: forward_rows off forward by {d}");
            let exact = x.broadcast_matmul(&w.t().unwrap()).unwrap();
            let got = lin.forward_rows(&x).unwrap();
            let scale = max_abs(&exact);
            let bias = lin.bias.clone().unwrap();
            let d = max_abs(&(got.broadcast_sub(&bias).unwrap() - exact).unwrap());
            // 2-bit weights are coarse; this only catches a wrong product, not precision.
            assert!(
                d <= 0.5 * scale,
                "{dtype:?}: off the exact product by {d} (scale {scale})"
            );
        }
    }
}
