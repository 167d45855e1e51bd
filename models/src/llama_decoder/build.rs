//! The one builder of [`LlamaDecoder`], whichever format its facts and tensors come
//! from ([`LlamaHparams`], [`TensorSource`]): each tensor by llama.cpp's name, checked
//! against the facts, placed where the architecture's options say.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use zoo_core::Result;

use super::conv::{conv_weight, ShortConv};
use super::load::{LlamaHparams, RopeScaling, TensorSource};
use super::{
    expert_slice, qm, row_slice, Attention, Expert, Ffn, Layer, LlamaDecoder, LlamaOptions, Mixer,
    Mlp, NormKind, Norms, QkNorm, Rotary, Shared,
};
use crate::layers::{KvCache, Norm, PagedKv, QLinear, RmsNorm, RopeTable};

impl LlamaDecoder {
    /// The decoder from its facts and tensors, whichever format they come from; tensors
    /// the options do not expect, or missing ones they do, are errors.
    pub(crate) fn build(
        hp: &LlamaHparams,
        options: &LlamaOptions,
        src: &TensorSource,
        device: &Device,
    ) -> Result<Self> {
        let LlamaHparams {
            heads,
            kv_heads,
            head_dim,
            eps,
            rope_base: base,
            experts: n_experts,
            used,
            ..
        } = *hp;
        let tensor = |name: &str| (src.tensor)(name, device);
        let dense = |name: &str| -> Result<Tensor> { Ok(tensor(name)?.dequantize(device)?) };
        let norm = |name: &str| -> Result<RmsNorm> { Ok(RmsNorm::new(dense(name)?, eps)) };
        // A tensor the architecture's facts do not foresee is an error, not ignored.
        let unexpected = |name: &str, fact: &str| {
            (src.invalid)(
                name,
                format!("present, but this architecture has no {fact}"),
            )
        };
        // So is a matrix of another shape than the hyper-parameters say (a config that
        // contradicts its checkpoint), before any forward meets it.
        let shaped = |name: &str, want: [usize; 2]| -> Result<QTensor> {
            let t = tensor(name)?;
            match t.shape().dims() {
                found if found == want => Ok(t),
                found => Err((src.invalid)(
                    name,
                    format!("has shape {found:?} where the hyper-parameters say {want:?}"),
                )),
            }
        };
        let embed = Arc::new(tensor("token_embd.weight")?);
        let hidden = embed.shape().dims().last().copied().unwrap_or(0);
        // `{stem}.bias` where the architecture has biases there (a checkpoint may leave
        // one out: StableLM's `use_qkv_bias`), an error where it has none.
        let bias = |stem: &str, on: bool, fact: &str| -> Result<Option<Tensor>> {
            let name = format!("{stem}.bias");
            match (on, (src.has)(&name)) {
                (true, true) => Ok(Some(dense(&name)?)),
                (false, true) => Err(unexpected(&name, fact)),
                (_, false) => Ok(None),
            }
        };
        let linear = |name: &str, rows: usize| -> Result<QLinear> {
            let b = bias(name, options.qkv_bias, "q/k/v biases")?;
            Ok(qm(shaped(&format!("{name}.weight"), [rows, hidden])?)?.with_bias(b))
        };
        let mlp_linear = |stem: &str| -> Result<QLinear> {
            let b = bias(stem, options.mlp_bias, "MLP biases")?;
            Ok(qm(tensor(&format!("{stem}.weight"))?)?.with_bias(b))
        };
        let qk_norm = |name: &str| -> Result<Option<RmsNorm>> {
            match (options.qk_norm, (src.has)(name)) {
                (QkNorm::Off, true) => Err(unexpected(name, "q/k norms")),
                (QkNorm::Off, false) => Ok(None),
                (_, _) => norm(name).map(Some),
            }
        };
        // Each branch's norms, by llama.cpp's names, where the architecture puts them
        // (transformers' names alias: Llama's `post_attention_layernorm` is the MLP's
        // pre-norm, OLMo 2's the attention's post-norm, so absence is not checked).
        let (pre, post) = match options.norms {
            Norms::Pre => (true, false),
            Norms::Post => (false, true),
            Norms::Sandwich => (true, true),
        };
        // The branch and output norms (`stem`: llama.cpp's name without `.weight`).
        let branch_norm = |stem: &str| -> Result<Norm> {
            let weight = format!("{stem}.weight");
            match options.norm {
                NormKind::Rms => norm(&weight).map(Norm::Rms),
                NormKind::Layer => Ok(Norm::Layer {
                    weight: dense(&weight)?,
                    bias: dense(&format!("{stem}.bias"))?,
                    eps,
                }),
                NormKind::PlainLayer => {
                    if (src.has)(&weight) {
                        return Err(unexpected(&weight, "norm weights"));
                    }
                    Ok(Norm::plain(hidden, eps, device)?)
                }
            }
        };
        let placed = |name: &str, on: bool| -> Result<Option<Norm>> {
            on.then(|| branch_norm(name)).transpose()
        };
        let output = match (src.has)("output.weight") {
            true => qm(tensor("output.weight")?)?,
            false => QLinear::new(embed.clone())?,
        }
        .with_bias(bias("output", options.output_bias, "output bias")?);
        let mut rope = RopeTable::new(hp.rotary_dims, base as f32, 1.0, device)?;
        if (src.has)("rope_freqs.weight") {
            let f: Vec<f32> = dense("rope_freqs.weight")?
                .to_dtype(DType::F32)?
                .to_vec1()?;
            rope = rope.with_factors(&f)?;
        }
        if let Some((factors, m)) = &hp.long_rope {
            rope = rope.with_factors(factors)?.with_attention_factor(*m);
        }
        match hp.scaling {
            Some(RopeScaling::Linear(f)) => {
                rope = rope.with_factors(&vec![f as f32; hp.rotary_dims / 2])?
            }
            Some(RopeScaling::Yarn(y)) => rope = rope.with_yarn(&y),
            None => {}
        }
        // A fused matrix is read into host memory and its parts sent to the device.
        let fused_parts = |name: &str, rows: &[usize]| -> Result<Vec<QLinear>> {
            let t = (src.tensor)(name, &Device::Cpu)?;
            let (total, at) = (rows.iter().sum::<usize>(), t.shape().dims());
            if at.first() != Some(&total) || at.get(1) != Some(&hidden) {
                return Err((src.invalid)(
                    name,
                    format!("has shape {at:?} where the hyper-parameters say [{total}, {hidden}]"),
                ));
            }
            let mut start = 0;
            rows.iter()
                .map(|&r| {
                    start += r;
                    qm(row_slice(&t, start - r..start, device)?)
                })
                .collect()
        };
        // Layer `i`'s attention: q, k and v fused where the architecture says, or where
        // the file has it (Phi-2 GGUFs come both ways).
        let attention = |i: usize| -> Result<Attention> {
            let p = |s: &str| format!("blk.{i}.{s}");
            let (q, k, v) = if options.fused_qkv || (src.has)(&p("attn_qkv.weight")) {
                let (qr, kr) = (heads * head_dim, kv_heads * head_dim);
                let name = p("attn_qkv.weight");
                let [q, k, v]: [QLinear; 3] = fused_parts(&name, &[qr, kr, kr])?
                    .try_into()
                    .map_err(|_| (src.invalid)(&name, "did not split in three".into()))?;
                match bias(&p("attn_qkv"), options.qkv_bias, "q/k/v biases")? {
                    None => (q, k, v),
                    Some(b) => (
                        q.with_bias(Some(b.narrow(0, 0, qr)?)),
                        k.with_bias(Some(b.narrow(0, qr, kr)?)),
                        v.with_bias(Some(b.narrow(0, qr + kr, kr)?)),
                    ),
                }
            } else {
                (
                    linear(&p("attn_q"), heads * head_dim)?,
                    linear(&p("attn_k"), kv_heads * head_dim)?,
                    linear(&p("attn_v"), kv_heads * head_dim)?,
                )
            };
            let o = qm(shaped(
                &p("attn_output.weight"),
                [hidden, heads * head_dim],
            )?)?;
            Ok(Attention {
                q,
                k,
                v,
                o: o.with_bias(bias(
                    &p("attn_output"),
                    options.o_bias,
                    "output projection bias",
                )?),
                q_norm: qk_norm(&p("attn_q_norm.weight"))?,
                k_norm: qk_norm(&p("attn_k_norm.weight"))?,
                qk_norm: options.qk_norm,
                clip_qkv: hp.clip_qkv,
                rotary: !options.learned_positions && hp.rotary.get(i).copied().unwrap_or(true),
                cache: KvCache::default(),
                paged: PagedKv::default(),
            })
        };
        let blocks = hp.blocks;
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let p = |s: &str| format!("blk.{i}.{s}");
            let mlp = |stem: &str| -> Result<Expert> {
                if (src.has)(&p("ffn_gate.bias")) && !options.mlp_bias {
                    return Err(unexpected(&p("ffn_gate.bias"), "MLP biases"));
                }
                if options.fused_gate_up && stem.is_empty() {
                    let down = tensor(&p("ffn_down.weight"))?;
                    let ff = down.shape().dims().last().copied().unwrap_or(0);
                    let name = p("ffn_up.weight");
                    let [gate, up]: [QLinear; 2] = fused_parts(&name, &[ff, ff])?
                        .try_into()
                        .map_err(|_| (src.invalid)(&name, "did not split in two".into()))?;
                    return Ok(Expert {
                        gate,
                        up,
                        down: qm(down)?,
                    });
                }
                Ok(Expert {
                    gate: mlp_linear(&p(&format!("ffn_gate{stem}")))?,
                    up: mlp_linear(&p(&format!("ffn_up{stem}")))?,
                    down: mlp_linear(&p(&format!("ffn_down{stem}")))?,
                })
            };
            let shared = match (
                options.shared_expert,
                (src.has)(&p("ffn_gate_inp_shexp.weight")),
            ) {
                (true, _) => Some(Shared {
                    expert: mlp("_shexp")?,
                    gate: qm(tensor(&p("ffn_gate_inp_shexp.weight"))?)?,
                }),
                (false, true) => {
                    return Err(unexpected(&p("ffn_gate_inp_shexp.weight"), "shared expert"))
                }
                (false, false) => None,
            };
            let ffn = if options.mlp == Mlp::Gelu {
                Ffn::Gelu {
                    up: mlp_linear(&p("ffn_up"))?,
                    down: mlp_linear(&p("ffn_down"))?,
                    kind: hp.gelu,
                }
            } else if n_experts == 0 || !hp.moe_layers.get(i).copied().unwrap_or(true) {
                Ffn::Dense(mlp("")?)
            } else {
                let experts = if (src.has)(&p("ffn_gate_exps.weight")) {
                    // The stacks are read into host memory and each expert's slice
                    // sent to the device from there.
                    let host = |name: &str| (src.tensor)(name, &Device::Cpu);
                    let (gate, up, down) = (
                        host(&p("ffn_gate_exps.weight"))?,
                        host(&p("ffn_up_exps.weight"))?,
                        host(&p("ffn_down_exps.weight"))?,
                    );
                    (0..n_experts)
                        .map(|e| {
                            Ok(Expert {
                                gate: qm(expert_slice(&gate, e, device)?)?,
                                up: qm(expert_slice(&up, e, device)?)?,
                                down: qm(expert_slice(&down, e, device)?)?,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?
                } else {
                    (0..n_experts)
                        .map(|e| {
                            Ok(Expert {
                                gate: qm(tensor(&p(&format!("ffn_gate.{e}.weight")))?)?,
                                up: qm(tensor(&p(&format!("ffn_up.{e}.weight")))?)?,
                                down: qm(tensor(&p(&format!("ffn_down.{e}.weight")))?)?,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?
                };
                Ffn::Moe {
                    router: qm(tensor(&p("ffn_gate_inp.weight"))?)?,
                    experts,
                    used,
                    norm_topk: hp.norm_topk,
                    shared,
                }
            };
            let mixer = match hp.conv_layers.get(i).copied().unwrap_or(false) {
                true => {
                    let name = p("shortconv.conv.weight");
                    let weight = dense(&name)?;
                    if weight.elem_count() != hidden * hp.conv_len {
                        return Err((src.invalid)(
                            &name,
                            format!(
                                "has shape {:?} where the hyper-parameters say [{hidden}, {}]",
                                weight.dims(),
                                hp.conv_len
                            ),
                        ));
                    }
                    Mixer::Conv(ShortConv::new(
                        qm(shaped(
                            &p("shortconv.in_proj.weight"),
                            [3 * hidden, hidden],
                        )?)?,
                        qm(shaped(&p("shortconv.out_proj.weight"), [hidden, hidden])?)?,
                        conv_weight(&weight)?,
                        hidden,
                    ))
                }
                false => Mixer::Attention(attention(i)?),
            };
            layers.push(Layer {
                attn_norm: placed(&p("attn_norm"), pre)?,
                post_attn_norm: placed(&p("post_attention_norm"), post)?,
                ffn_norm: placed(&p("ffn_norm"), pre && !hp.parallel)?,
                post_ffn_norm: placed(&p("post_ffw_norm"), post)?,
                mixer,
                parallel: hp.parallel,
                ffn,
            });
        }
        Ok(Self {
            embed,
            layers,
            norm: branch_norm(options.output_norm)?,
            output,
            rotary: Rotary {
                rope,
                layout: options.rope,
                dims: hp.rotary_dims,
            },
            positions: match options.learned_positions {
                true => Some(dense("position_embd.weight")?.to_dtype(DType::F32)?),
                false => None,
            },
            scales: hp.scales,
            heads,
            kv_heads,
            head_dim,
            vocab: hp.vocab,
        })
    }
}
