//! Choosing the next token: greedy, temperature, top-k, top-p, min-p, repeat,
//! presence and frequency penalties, seed; and the log-probabilities of a row.
//! Built on candle-transformers' `LogitsProcessor`.

use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};

use crate::{Error, Result};

/// Temperatures below this sample greedily, as 0 does (vLLM's convention, its
/// `_SAMPLING_EPS`): dividing logits by a smaller one can overflow f32 (1e-40 makes every
/// logit infinite, and the softmax NaN), and what it asks for is the most likely token
/// anyway: at 1e-5, a logit 0.001 below the largest has e^-100 of its weight.
pub const GREEDY_BELOW: f64 = 1e-5;

/// How to pick tokens. A `temperature` below [`GREEDY_BELOW`] (the default, 0) is
/// greedy (argmax).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f64,
    /// Keep the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches `p` (`None`: all).
    pub top_p: Option<f64>,
    /// Divide (positive logits) or multiply (negative ones) the logits of recent
    /// tokens by this; 1.0 is off.
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at.
    pub repeat_last_n: usize,
    /// Keep the tokens whose probability is at least `min_p` times the most likely
    /// one's (`None`: all).
    pub min_p: Option<f64>,
    /// Subtracted once from the logit of every token generated so far (OpenAI's
    /// `presence_penalty`, -2..2); 0 is off.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated (OpenAI's
    /// `frequency_penalty`, -2..2); 0 is off.
    pub frequency_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            min_p: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 299792458,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Whether these parameters pick the most likely token (after any penalty).
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_BELOW
    }

    /// Checks the values, saying which is out of range.
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::Sampling(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::Sampling(format!("top_p must be in (0, 1], got {p}")));
            }
        }
        if let Some(p) = self.min_p {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::Sampling(format!("min_p must be in [0, 1], got {p}")));
            }
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(Error::Sampling(format!(
                    "{name} must be in [-2, 2], got {v}"
                )));
            }
        }
        if self.top_k == Some(0) {
            return Err(Error::Sampling("top_k must be at least 1".into()));
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return Err(Error::Sampling(format!(
                "repeat_penalty must be > 0, got {}",
                self.repeat_penalty
            )));
        }
        Ok(())
    }
}

/// Picks tokens from logits according to [`SamplingParams`].
pub struct Sampler {
    params: SamplingParams,
    processor: LogitsProcessor,
    /// How often each token was sampled (presence and frequency penalties).
    counts: std::collections::HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let t = params.temperature;
        let sampling = if params.is_greedy() {
            Sampling::ArgMax
        } else {
            match (params.top_k, params.top_p) {
                (None, None) => Sampling::All { temperature: t },
                (Some(k), None) => Sampling::TopK { k, temperature: t },
                (None, Some(p)) => Sampling::TopP { p, temperature: t },
                (Some(k), Some(p)) => Sampling::TopKThenTopP {
                    k,
                    p,
                    temperature: t,
                },
            }
        };
        let processor = LogitsProcessor::from_sampling(params.seed, sampling);
        Ok(Self {
            params,
            processor,
            counts: Default::default(),
        })
    }

    /// As [`Self::sample`] for a row of host logits. Greedy decoding without penalties
    /// picks on the row itself ([`argmax`]: the token candle's argmax picks), with no
    /// tensor built: the engine samples every sequence of a step on one thread while
    /// the others wait.
    pub fn sample_row(&mut self, row: &[f32], history: &[u32]) -> Result<u32> {
        let p = &self.params;
        let plain =
            p.repeat_penalty == 1.0 && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0;
        if p.is_greedy() && plain && !row.is_empty() {
            let next = argmax(row);
            *self.counts.entry(next).or_default() += 1;
            return Ok(next);
        }
        self.sample(&Tensor::new(row, &candle_core::Device::Cpu)?, history)
    }

    /// The next token for one row of logits (`[vocab]` or `[1, vocab]`), given the
    /// tokens so far (for the repeat penalty).
    pub fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32> {
        let logits = logits.flatten_all()?;
        let logits = if self.params.repeat_penalty != 1.0 && !history.is_empty() {
            let start = history.len().saturating_sub(self.params.repeat_last_n);
            candle_transformers::utils::apply_repeat_penalty(
                &logits,
                self.params.repeat_penalty,
                &history[start..],
            )?
        } else {
            logits
        };
        let p = &self.params;
        let adjust = !self.counts.is_empty()
            && (p.presence_penalty != 0.0 || p.frequency_penalty != 0.0)
            || p.min_p.is_some_and(|m| m > 0.0) && !p.is_greedy();
        let logits = if adjust {
            let mut v = logits.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
            for (&t, &n) in &self.counts {
                if let Some(x) = v.get_mut(t as usize) {
                    *x -= p.presence_penalty + p.frequency_penalty * n as f32;
                }
            }
            if let Some(m) = p.min_p.filter(|&m| m > 0.0 && !p.is_greedy()) {
                // p_i >= m * p_max  <=>  x_i >= x_max + ln(m) (temperature-scaled).
                let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let floor = max + (m.ln() * p.temperature) as f32;
                for x in v.iter_mut().filter(|x| **x < floor) {
                    *x = f32::NEG_INFINITY;
                }
            }
            Tensor::new(v, logits.device())?
        } else {
            logits
        };
        let next = self.processor.sample(&logits)?;
        *self.counts.entry(next).or_default() += 1;
        Ok(next)
    }
}

/// The index of the first largest value of a non-empty `row`, as candle's `argmax`
/// (which keeps the first value and moves only to a strictly larger one): NaNs after
/// the first value are passed over, a NaN first value is kept. The largest value first
/// (a fold that vectorizes), then where it first occurs.
pub fn argmax(row: &[f32]) -> u32 {
    if row.first().is_none_or(|v| v.is_nan()) {
        return 0;
    }
    let lanes = row.chunks(16).fold([f32::NEG_INFINITY; 16], |mut m, c| {
        for (m, &v) in m.iter_mut().zip(c) {
            *m = m.max(v);
        }
        m
    });
    let max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter().position(|&v| v == max).unwrap_or(0) as u32
}

/// The log-probability of `chosen` in a row of logits and the `top` most likely
/// tokens with theirs (log-softmax of the model's own logits, before any sampling
/// adjustment, as OpenAI's `logprobs` reports).
pub fn logprobs(row: &[f32], chosen: u32, top: usize) -> (f32, Vec<(u32, f32)>) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max
        + row
            .iter()
            .map(|x| ((x - max) as f64).exp())
            .sum::<f64>()
            .ln() as f32;
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    let top = top.min(row.len());
    if top > 0 {
        order.select_nth_unstable_by(top - 1, |&a, &b| {
            row[b as usize].total_cmp(&row[a as usize])
        });
        order.truncate(top);
        order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    } else {
        order.clear();
    }
    let lp = row
        .get(chosen as usize)
        .map_or(f32::NEG_INFINITY, |x| x - lse);
    (
        lp,
        order
            .into_iter()
            .map(|t| (t, row[t as usize] - lse))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn logits() -> Tensor {
        Tensor::new(&[0.1f32, 3.0, 2.9, -1.0], &Device::Cpu).unwrap()
    }

    /// [`argmax`] and the greedy [`Sampler::sample_row`] pick candle's token: random
    /// rows, ties (the first wins), NaNs and infinities.
    #[test]
    fn argmax_is_candles() {
        let mut rows: Vec<Vec<f32>> = (0..20)
            .map(|i| {
                let t = Tensor::randn(0f32, 1.0, 1000 + i, &candle_core::Device::Cpu).unwrap();
                t.to_vec1().unwrap()
            })
            .collect();
        rows.push(vec![1.0, 3.0, 2.0, 3.0, 3.0]);
        rows.push(vec![f32::NAN, 5.0, 1.0]);
        rows.push(vec![1.0, f32::NAN, 5.0, f32::NAN]);
        rows.push(vec![f32::NEG_INFINITY; 40]);
        rows.push(vec![0.0, f32::INFINITY, 2.0, f32::INFINITY]);
        rows.push(vec![f32::NAN; 3]);
        rows.push(vec![-2.0]);
        for row in rows {
            let t = Tensor::new(row.as_slice(), &candle_core::Device::Cpu).unwrap();
            let want = t.argmax(0).unwrap().to_scalar::<u32>().unwrap();
            assert_eq!(argmax(&row), want, "{row:?}");
            let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
            assert_eq!(s.sample_row(&row, &[]).unwrap(), want, "{row:?}");
        }
    }

    #[test]
    fn greedy_takes_argmax() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&logits(), &[]).unwrap(), 1);
    }

    #[test]
    fn repeat_penalty_moves_argmax() {
        let params = SamplingParams {
            repeat_penalty: 1.5,
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(params).unwrap();
        assert_eq!(s.sample(&logits(), &[1]).unwrap(), 2);
    }

    #[test]
    fn same_seed_same_tokens() {
        let params = SamplingParams {
            temperature: 1.0,
            top_p: Some(0.95),
            seed: 7,
            ..Default::default()
        };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone()).unwrap();
            (0..32)
                .map(|_| s.sample(&logits(), &[]).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(&params), draw(&params));
        assert!(draw(&params).iter().all(|&t| t < 4));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let params = SamplingParams {
            temperature: 5.0,
            top_k: Some(1),
            ..Default::default()
        };
        let mut s = Sampler::new(params).unwrap();
        for _ in 0..16 {
            assert_eq!(s.sample(&logits(), &[]).unwrap(), 1);
        }
    }

    #[test]
    fn bad_params_are_rejected() {
        for p in [
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: Some(1.5),
                ..Default::default()
            },
            SamplingParams {
                top_k: Some(0),
                ..Default::default()
            },
            SamplingParams {
                repeat_penalty: 0.0,
                ..Default::default()
            },
        ] {
            assert!(matches!(Sampler::new(p), Err(Error::Sampling(_))));
        }
    }

    #[test]
    fn penalties_and_min_p_move_the_choice() {
        // Greedy with a presence penalty: after picking 1 once, 2 (2.9) beats 1 (3.0 - 0.5).
        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 0.5,
            ..SamplingParams::greedy()
        })
        .unwrap();
        assert_eq!(s.sample(&logits(), &[]).unwrap(), 1);
        assert_eq!(s.sample(&logits(), &[]).unwrap(), 2);
        // min_p 0.5 at temperature 1 keeps 1 (3.0) and 2 (2.9 > 3.0 + ln 0.5) only.
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            min_p: Some(0.5),
            seed: 3,
            ..Default::default()
        })
        .unwrap();
        for _ in 0..50 {
            assert!(matches!(s.sample(&logits(), &[]).unwrap(), 1 | 2));
        }
        assert!(SamplingParams {
            min_p: Some(1.5),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SamplingParams {
            frequency_penalty: 3.0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn logprobs_are_a_log_softmax() {
        let (lp, top) = logprobs(&[0.0, 1.0, 2.0], 1, 2);
        let z = (1f64 + 1f64.exp() + 2f64.exp()).ln();
        assert!((lp as f64 - (1.0 - z)).abs() < 1e-6);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![2, 1]);
        assert!(top.iter().map(|t| (t.1 as f64).exp()).sum::<f64>() < 1.0);
    }

    /// A temperature too small to divide by in f32 samples greedily (it used to make
    /// every logit infinite and the sampler fail on a NaN softmax); one above the
    /// threshold still samples.
    #[test]
    fn tiny_temperatures_are_greedy() {
        let row = [0.1f32, 3.0, 2.9, -1.0];
        for t in [1e-40, 1e-20, GREEDY_BELOW / 2.0] {
            let params = SamplingParams {
                temperature: t,
                min_p: Some(0.1),
                ..Default::default()
            };
            assert!(params.is_greedy(), "{t}");
            let mut s = Sampler::new(params.clone()).unwrap();
            assert_eq!(s.sample_row(&row, &[]).unwrap(), 1, "{t}");
            // With a penalty the row goes through the tensor path: greedy there too.
            let mut s = Sampler::new(SamplingParams {
                presence_penalty: 0.5,
                ..params
            })
            .unwrap();
            assert_eq!(s.sample_row(&row, &[]).unwrap(), 1, "{t}");
        }
        assert!(!SamplingParams {
            temperature: 0.7,
            ..Default::default()
        }
        .is_greedy());
    }
}
