//! What the kernels' tests share: the formats under test, candle's product to compare
//! with, exact comparisons and reproducible inputs.

use super::Format;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Module, Tensor};

/// The formats with blocks of 32 values, with their candle names.
pub(super) fn formats() -> [(Format, GgmlDType); 5] {
    [
        (Format::Q4_0, GgmlDType::Q4_0),
        (Format::Q4_1, GgmlDType::Q4_1),
        (Format::Q5_0, GgmlDType::Q5_0),
        (Format::Q5_1, GgmlDType::Q5_1),
        (Format::Q8_0, GgmlDType::Q8_0),
    ]
}

pub(super) fn k_formats() -> [(Format, GgmlDType); 2] {
    [(Format::Q4K, GgmlDType::Q4K), (Format::Q6K, GgmlDType::Q6K)]
}

/// candle's own quantized product `x . q^T` (QMatMul), flattened.
pub(super) fn candle_product(q: std::sync::Arc<QTensor>, x: &Tensor) -> Vec<f32> {
    candle_core::quantized::QMatMul::from_arc(q)
        .unwrap()
        .forward(x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The bit patterns of `v`, for exact comparisons with readable failures.
pub(super) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// Deterministic roughly normal values (sum of four uniforms from a 64-bit LCG).
pub(super) fn pseudo_normal(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..n)
        .map(|_| (uniform() + uniform() + uniform() + uniform()) * 1.7)
        .collect()
}
