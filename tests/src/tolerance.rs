//! Rule 1 of the suite, written once: every comparison with a reference states its
//! bound and why, every greedy comparison requires a floor of equal tokens before it
//! accepts a near tie, and a near tie is judged on the reference's own logits.
//!
//! A [`Rule`] is the reason a comparison may differ at all (what the two sides compute
//! differently); it fixes the logit bound, the greedy floor and the near-tie bound. No
//! test carries a free number: a fixture that needs another rule than its weight
//! type's names it in its spec (`"rules": {"llama.cpp": "..."}`), and the rule says why.
//! docs/conformance.md lists the rules and, per variant, what was measured under them.

use serde::Serialize;

/// Why a comparison with a reference may differ, and by how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// f32 weights and activations on both sides, the same formulas: only the order of
    /// float sums differs.
    F32SameMath,
    /// Quantized weights against llama.cpp: both quantize the activations to 8-bit blocks
    /// (q8_0 / q8_K) and take the same integer dot products; only the float accumulation
    /// of block sums differs.
    QuantSameProducts,
    /// f16/bf16 weights against llama.cpp, which rounds the activations to f16 before its
    /// f16 dot products; zoo multiplies the f16 weights by f32 activations.
    F16Activations,
    /// A GGUF file's GELU computed as llama.cpp does (its f16 table) against
    /// transformers' exact tanh GELU: the GGUF f32 variants' second reference.
    GgmlGeluTable,
    /// A GELU architecture's f32 GGUF against llama.cpp: the same table on both sides,
    /// but an input within float noise of an f16 rounding boundary rounds one way in one
    /// runtime and the other way in the other.
    GeluTableFlipsF32,
    /// A GELU architecture's quantized GGUF (32-value activation blocks: q4_0, q8_0)
    /// against llama.cpp: table flips as above, each of which moves later q8 roundings.
    GeluTableFlipsQ8,
    /// As [`Rule::GeluTableFlipsQ8`] for the K-quants, whose activations are quantized in
    /// blocks of 256 (q8_K): one scale over 8x the values, a coarser step.
    #[serde(rename = "gelu-table-flips-q8k")]
    GeluTableFlipsQ8K,
    /// A quantized GGUF against llama.cpp where the two sum the same integer block
    /// products in another float order (zoo's phase order for the 32-value formats,
    /// candle's kernels for Q2_K, Q3_K and Q5_K) and the fixture meets an 8-bit rounding
    /// that float noise decides: one q8 step apart, carried by the next layers.
    #[serde(rename = "q8-order-flips")]
    Q8OrderFlips,
    /// A real quantized model (24 to 30 layers, activations quantized to 8-bit blocks)
    /// against llama.cpp with an f32 KV cache: float noise flips q8 roundings at every
    /// step, and the flips add up over the layers; llama.cpp against itself measures it.
    #[serde(rename = "real-model-q8")]
    RealModelQ8,
}

impl Rule {
    /// Every rule, for the table in docs/conformance.md.
    pub const ALL: [Rule; 9] = [
        Rule::F32SameMath,
        Rule::QuantSameProducts,
        Rule::F16Activations,
        Rule::GgmlGeluTable,
        Rule::GeluTableFlipsF32,
        Rule::GeluTableFlipsQ8,
        Rule::GeluTableFlipsQ8K,
        Rule::Q8OrderFlips,
        Rule::RealModelQ8,
    ];

    /// The name a spec uses (`"rules": {"transformers": "ggml-gelu-table"}`).
    pub fn name(self) -> &'static str {
        match self {
            Rule::F32SameMath => "f32-same-math",
            Rule::QuantSameProducts => "quant-same-products",
            Rule::F16Activations => "f16-activations",
            Rule::GgmlGeluTable => "ggml-gelu-table",
            Rule::GeluTableFlipsF32 => "gelu-table-flips-f32",
            Rule::GeluTableFlipsQ8 => "gelu-table-flips-q8",
            Rule::GeluTableFlipsQ8K => "gelu-table-flips-q8k",
            Rule::Q8OrderFlips => "q8-order-flips",
            Rule::RealModelQ8 => "real-model-q8",
        }
    }

    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Max |logit - reference| at the prompts' last positions and, where
    /// [`Rule::bounds_steps`], at every greedy step (the reference's top 20 there).
    pub fn logits(self) -> f32 {
        match self {
            Rule::F32SameMath => 1e-4,
            Rule::QuantSameProducts => 1e-3,
            Rule::F16Activations => 2e-2,
            Rule::GgmlGeluTable => 1e-2,
            Rule::GeluTableFlipsF32 => 5e-3,
            Rule::GeluTableFlipsQ8 => 0.15,
            Rule::GeluTableFlipsQ8K => 0.3,
            Rule::Q8OrderFlips => 0.63,
            Rule::RealModelQ8 => 2.0,
        }
    }

    /// Whether the greedy steps' logits are held to [`Rule::logits`] too. Not where the
    /// activations are quantized to 8 bits: a hidden state within float noise of a q8
    /// rounding boundary flips one step, which moves that step's logits by a step of the
    /// block scale times the output weights (measured up to 0.42 on these fixtures, and
    /// llama.cpp against itself, the same tokens as one batch or one at a time, up to
    /// 0.42 too: `quantized-llama::q4_k_m`, 2026-11-30); the steps' tokens are held by the
    /// floor instead, and their logits reported.
    pub fn bounds_steps(self) -> bool {
        matches!(
            self,
            Rule::F32SameMath
                | Rule::F16Activations
                | Rule::GgmlGeluTable
                | Rule::GeluTableFlipsF32
                | Rule::Q8OrderFlips
                | Rule::RealModelQ8
        )
    }

    /// Whether both sides compute the same products, so that every greedy step must pick
    /// the reference's token.
    pub fn same_products(self) -> bool {
        matches!(
            self,
            Rule::F32SameMath | Rule::QuantSameProducts | Rule::GeluTableFlipsF32
        )
    }

    /// How many of `len` greedy steps must pick the reference's token (teacher-forced on
    /// the reference's tokens) before any other step is accepted as a near tie: all where
    /// both sides compute the same products; three quarters on a real model (llama.cpp
    /// against itself keeps at least 29 of 32, see [`Rule::why`]); else half.
    pub fn greedy_floor(self, len: usize) -> usize {
        if self.same_products() {
            len
        } else if matches!(self, Rule::RealModelQ8 | Rule::Q8OrderFlips) {
            len - len / 4
        } else {
            len / 2
        }
    }

    /// The reference's own logit gap between its token and ours that a differing step
    /// may have: if every logit is within `b` of the reference's, ours can only rank
    /// another token first where the reference's two are within `2b`.
    ///
    /// On a real model that derivation gives 4.0, which says nothing; the bound there is
    /// measured on the reference alone: llama.cpp against itself picks another token at
    /// its own gaps up to 0.22, and 0.5 is 2.3x that.
    pub fn near_tie(self) -> f32 {
        match self {
            Rule::RealModelQ8 => 0.5,
            r => 2.0 * r.logits(),
        }
    }

    /// Why the bound is what it is: the derivation, or the measurement and its margin.
    pub fn why(self) -> &'static str {
        match self {
            Rule::F32SameMath => {
                "Both sides compute in f32 with the same formulas; summing in another order \
                 moves a logit by a few f32 ulps per layer (measured at most 2.4e-5 over every \
                 f32 comparison, last positions and greedy steps, on logits up to ~30). 1e-4 is \
                 4x that and 1000x below what a wrong RoPE base or window moves."
            }
            Rule::QuantSameProducts => {
                "Both runtimes quantize each activation row to 8-bit blocks and take the same \
                 integer dot products with the same weight blocks; only the float sums of the \
                 block products run in another order (measured 0 to 7e-6 at the last \
                 positions). 1e-3 is 100x that; a 1 % error in a block scale moves logits by \
                 more than 1e-2. Greedy steps: see bounds_steps."
            }
            Rule::F16Activations => {
                "llama.cpp rounds every activation to f16 (2^-11 relative) before an f16 dot \
                 product; zoo does not. Over two to six layers that moves logits of magnitude \
                 ~4 by a few 1e-3 (measured at most 8.9e-3); 2e-2 is 2.2x that."
            }
            Rule::GgmlGeluTable => {
                "zoo computes a GGUF file's GELU as llama.cpp does: the input rounded to f16 \
                 and the output read from an f16 table, up to 2^-11 relative on each (a unit \
                 test bounds it by 2^-9 against the exact form); transformers computes the \
                 exact tanh form. Measured 2.0e-3 to 3.4e-3 on the logits; 1e-2 is 3x that."
            }
            Rule::GeluTableFlipsF32 => {
                "Same table, same math; but a GELU input within float noise (~1e-7 relative) \
                 of an f16 rounding boundary rounds apart, and the looked-up value then \
                 differs by one f16 ulp (2^-10 relative): of the order of 1e-3 on the next \
                 layer's output. Measured at most 1.1e-3; 5e-3 is 4.5x that (and the bound \
                 these variants had before zoo computed the table, not raised)."
            }
            Rule::GeluTableFlipsQ8 => {
                "A table flip (one f16 ulp, 5e-4 relative) moves the next q8_0 quantization of \
                 that row past a rounding boundary with a probability of about 5e-4 x 127 = 6 % \
                 per value, so some flips become whole q8 steps (1/127 of the block's largest \
                 value) that later layers carry. Measured at most 4.1e-2 on logits within \
                 -5..5; 0.15 is 3.7x that (the bound before the table, not raised)."
            }
            Rule::GeluTableFlipsQ8K => {
                "As for q8_0, with the K-quants' q8_K activation blocks of 256 values: the \
                 block's largest value, and so one q8 step, is larger than over 32 values. \
                 Measured at most 0.17 on logits within -8..32; 0.3 is 1.8x that (the bound \
                 before the table, not raised)."
            }
            Rule::Q8OrderFlips => {
                "Both take the same integer products of the same 8-bit blocks, but sum the \
                 blocks' float products in another order; a hidden value within float noise \
                 (~1e-7 relative) of a q8 rounding boundary then rounds one step apart (1/127 \
                 of its block's largest value), and the next layers carry it. llama.cpp \
                 against itself (the same tokens as one batch instead of one at a time, over \
                 every quantized fixture's greedy steps, measured 2026-11-30) moves its top 20 \
                 logits by up to 0.42 and picks another token at 1 of 48 steps at most; 0.63 \
                 is 1.5x that move (the margin of real-model-q8), floor 12 of 16 leaves 4 \
                 steps where llama.cpp itself needs 1. Measured on the variants that meet \
                 such a rounding: at most 0.165 (last positions), 0.155 (greedy steps), 15 \
                 of 16 steps."
            }
            Rule::RealModelQ8 => {
                "Over 24 to 30 layers, float noise flips q8 roundings of the activations at \
                 every step, and the flips add up. llama.cpp against itself (the same tokens \
                 as one batch instead of one at a time, f32 KV cache) moves its top 20 logits \
                 by up to 0.91 (SmolLM2 Q4_1), 0.43 (Qwen2.5-Coder Q4_K_M) and 1.29 (Gemma 3 \
                 Q4_K_M), and picks another token at 0 to 3 of 32 steps per prompt, at its own \
                 gaps up to 0.22. 2.0 is 1.5x the largest move (a wrong layer moves logits by \
                 units: Gemma 3 with SiLU for GELU, 9); near tie 0.5 is 2.3x its largest flip \
                 gap; floor 24 of 32 leaves 8 steps where llama.cpp itself needs 3."
            }
        }
    }
}

/// The rule of a fixture variant of weight type `variant` compared with the reference
/// `implementation`, unless its spec names another (`spec_rules`: reference name
/// prefix to rule name).
pub fn fixture_rule(
    variant: &str,
    implementation: &str,
    spec_rules: &serde_json::Value,
) -> Result<Rule, String> {
    if let Some(map) = spec_rules.as_object() {
        for (prefix, name) in map {
            if implementation.starts_with(prefix.as_str()) {
                let name = name.as_str().unwrap_or("");
                return Rule::from_name(name).ok_or_else(|| {
                    format!(
                        "the spec names the rule `{name}` for {prefix}; expected one of {:?} (tests/src/tolerance.rs)",
                        Rule::ALL.map(Rule::name)
                    )
                });
            }
        }
    }
    Ok(match variant {
        "f32" => Rule::F32SameMath,
        "f16" | "bf16" => Rule::F16Activations,
        _ => Rule::QuantSameProducts,
    })
}

/// Bound of our own incremental decode against our full forward (no reference), for a
/// variant whose main reference's rule is `rule`: the same sums in another order, so the
/// rule's own reason applies (f32: 1e-4; a GELU table flip: 5e-3 or more); f16 weights
/// compute in f32 here and are held as the quantized types (1e-3).
pub fn kv_bound(rule: Rule) -> f32 {
    match rule {
        Rule::F16Activations | Rule::GgmlGeluTable => Rule::QuantSameProducts.logits(),
        r => r.logits(),
    }
}

/// The reference's top logits at one greedy step, largest first: `(token, logit)`.
pub type Top = [(u32, f32)];

/// What one greedy comparison measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Greedy {
    /// Steps whose argmax is the reference's token (teacher-forced on the reference's
    /// tokens, so every step sees the reference's context).
    pub matched: usize,
    pub len: usize,
    /// The first step whose argmax is another token.
    pub first_difference: Option<usize>,
    /// Over the steps whose argmax differs: the largest of the reference's logit for its
    /// token minus its logit for ours (a lower bound when ours is not among its top).
    pub reference_gap: Option<f32>,
    /// Max |ours - reference| over the reference's top logits, over all steps.
    pub max_step_diff: f32,
    /// The step of `max_step_diff`.
    pub worst_step: usize,
}

/// Compares our logits `chose[i]` at the reference's greedy steps (teacher-forced on its
/// tokens `reference`) with its top logits `top[i]` there, under `rule`: at least the
/// rule's floor of steps whose argmax is the reference's token, every other step a near
/// tie on the reference's own logits, and, where the rule bounds steps, the logits of
/// every step within its bound. Returns the measurement, and why it fails if it does.
pub fn judge_greedy(
    rule: Rule,
    chose: &[Vec<f32>],
    reference: &[u32],
    top: &[Vec<(u32, f32)>],
) -> (Greedy, Result<(), String>) {
    let len = reference.len();
    let mut g = Greedy {
        matched: 0,
        len,
        first_difference: None,
        reference_gap: None,
        max_step_diff: 0.0,
        worst_step: 0,
    };
    if top.len() != len || chose.len() != len {
        g.max_step_diff = f32::INFINITY;
        return (
            g,
            Err(format!(
                "{len} greedy tokens, {} steps of reference logits and {} of ours: regenerate the reference (`cargo xtask refgen`)",
                top.len(),
                chose.len()
            )),
        );
    }
    let mut problems = Vec::new();
    for step in 0..len {
        for &(t, l) in &top[step] {
            let d = (chose[step][t as usize] - l).abs();
            let d = if d.is_nan() { f32::INFINITY } else { d };
            if d > g.max_step_diff {
                (g.max_step_diff, g.worst_step) = (d, step);
            }
        }
        let ours = crate::argmax(&chose[step]);
        if ours == reference[step] {
            g.matched += 1;
            continue;
        }
        g.first_difference.get_or_insert(step);
        let best = top[step][0].1;
        let (gap, in_top) = match top[step].iter().find(|(t, _)| *t == ours) {
            Some((_, l)) => (best - l, true),
            None => (
                best - top[step].last().map_or(f32::NEG_INFINITY, |x| x.1),
                false,
            ),
        };
        g.reference_gap = Some(g.reference_gap.map_or(gap, |m| m.max(gap)));
        if !in_top || gap > rule.near_tie() {
            problems.push(format!(
                "at step {step} our argmax is {ours}, the reference's {}, whose own logit is {gap} above ours{} (near-tie bound {})",
                reference[step],
                if in_top { "" } else { " at least (ours is not in its top logits)" },
                rule.near_tie()
            ));
        }
    }
    let floor = rule.greedy_floor(len);
    if g.matched < floor {
        problems.push(format!(
            "{} of {len} greedy steps pick the reference's token, below the floor of {floor}",
            g.matched
        ));
    }
    if rule.bounds_steps() && g.max_step_diff > rule.logits() {
        problems.push(format!(
            "at greedy step {} the logits differ from the reference's top ones by {} (bound {})",
            g.worst_step,
            g.max_step_diff,
            rule.logits()
        ));
    }
    let verdict = if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} (rule {})", problems.join("; "), rule.name()))
    };
    (g, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok((g, v): (Greedy, Result<(), String>)) -> Greedy {
        v.unwrap();
        g
    }

    fn top(v: &[f32]) -> Vec<(u32, f32)> {
        let mut t: Vec<(u32, f32)> = v
            .iter()
            .copied()
            .enumerate()
            .map(|(i, x)| (i as u32, x))
            .collect();
        t.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        t.truncate(3);
        t
    }

    /// Equal steps pass; a differing step passes only above the floor and at a near tie
    /// of the reference's own logits.
    #[test]
    fn floor_and_reference_gap() {
        let r = Rule::F16Activations;
        let reference_logits = vec![vec![1.0, 0.99, 0.0, -1.0]; 4];
        let refs = vec![0u32; 4];
        let tops: Vec<_> = reference_logits.iter().map(|l| top(l)).collect();
        let same = ok(judge_greedy(r, &reference_logits, &refs, &tops));
        assert_eq!((same.matched, same.reference_gap), (4, None));
        // Ours picks token 1 at step 3: 3 of 4 is above the floor of 2.
        let mut ours = reference_logits.clone();
        ours[3] = vec![0.99, 1.0, 0.0, -1.0];
        let g = ok(judge_greedy(r, &ours, &refs, &tops));
        assert_eq!((g.matched, g.first_difference), (3, Some(3)));
        assert!((g.reference_gap.unwrap() - 0.01).abs() < 1e-6);
        // Three differing steps: below the floor, near ties or not.
        let mut three = reference_logits.clone();
        for step in three.iter_mut().skip(1) {
            *step = vec![0.99, 1.0, 0.0, -1.0];
        }
        let e = judge_greedy(r, &three, &refs, &tops).1.unwrap_err();
        assert!(e.contains("below the floor"), "{e}");
        // Same products: no differing step is accepted.
        assert!(judge_greedy(Rule::QuantSameProducts, &ours, &refs, &tops)
            .1
            .is_err());
        // A reference gap above the near-tie bound fails whatever our logits say.
        let wide = vec![vec![1.0, 0.5, 0.0, -1.0]; 4];
        let tops: Vec<_> = wide.iter().map(|l| top(l)).collect();
        let mut ours = wide.clone();
        ours[3] = vec![0.5, 1.0, 0.0, -1.0];
        let e = judge_greedy(Rule::GeluTableFlipsQ8, &ours, &refs, &tops)
            .1
            .unwrap_err();
        assert!(e.contains("above ours"), "{e}");
    }

    /// `real-model-q8` is measured on the references' own noise (llama.cpp against
    /// itself, recorded by `refgen --real-models`): its bounds keep their stated margins
    /// over it, so a re-recording that moves more fails here, not in a model test.
    #[test]
    fn real_model_rule_covers_the_references_own_noise() {
        let r = Rule::RealModelQ8;
        let (mut diff, mut gap, mut fewest) = (0f32, 0f32, f32::INFINITY);
        for name in ["smollm2", "gemma3", "qwen2.5-coder"] {
            let reference = crate::reference(&format!("f32-kv/{name}")).unwrap();
            for case in &reference.generate {
                let own = case
                    .one_batch
                    .as_ref()
                    .expect("refgen --real-models records one_batch");
                diff = diff.max(own.max_top_diff);
                gap = own.flips.iter().fold(gap, |g, f| g.max(f.1));
                let len = case.continuation_ids.len();
                fewest = fewest.min((len - own.flips.len()) as f32 / len as f32);
            }
        }
        assert!(
            diff > 0.1,
            "the references record llama.cpp's own noise ({diff})"
        );
        assert!(
            r.logits() >= 1.5 * diff,
            "bound {} < 1.5 x llama.cpp's own {diff}",
            r.logits()
        );
        assert!(
            r.near_tie() >= 2.0 * gap,
            "near tie {} < 2 x llama.cpp's own flip gap {gap}",
            r.near_tie()
        );
        let floor = r.greedy_floor(32) as f32 / 32.0;
        assert!(
            floor < fewest,
            "floor {floor} of the steps, llama.cpp itself keeps {fewest}"
        );
    }

    /// The logits of every step are held to a continuous rule's bound, not to a
    /// quantized one's; specs name rules.
    #[test]
    fn step_logits_and_spec_rules() {
        let l = vec![vec![1.0, 0.0]; 2];
        let tops: Vec<_> = l.iter().map(|l| top(l)).collect();
        let mut ours = l.clone();
        ours[1][1] = 0.5;
        let e = judge_greedy(Rule::F32SameMath, &ours, &[0, 0], &tops)
            .1
            .unwrap_err();
        assert!(e.contains("greedy step 1"), "{e}");
        let g = ok(judge_greedy(Rule::QuantSameProducts, &ours, &[0, 0], &tops));
        assert_eq!(g.max_step_diff, 0.5);
        let spec = serde_json::json!({"transformers": "ggml-gelu-table"});
        assert_eq!(
            fixture_rule("f32", "transformers (x)", &spec),
            Ok(Rule::GgmlGeluTable)
        );
        assert_eq!(
            fixture_rule("f32", "llama.cpp (x)", &spec),
            Ok(Rule::F32SameMath)
        );
        assert_eq!(
            fixture_rule("q4_0", "llama.cpp", &serde_json::Value::Null),
            Ok(Rule::QuantSameProducts)
        );
        assert!(fixture_rule(
            "f32",
            "transformers",
            &serde_json::json!({"transformers": "wide"})
        )
        .is_err());
    }
}
