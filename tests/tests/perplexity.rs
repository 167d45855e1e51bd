//! `zoo::perplexity` on conformance fixtures (context 64): the windows run together in
//! one batched step give the same bits as one window per step; the figure equals
//! exp(mean nll) computed here independently, one token per `CausalLM::forward`, with
//! the BOS put first in every window; the one-token fallback of a model without a
//! batched forward agrees with the batched path; the window cut and the refusals
//! (a text under two windows, a window the model cannot hold) are as llama-perplexity's.

use std::path::PathBuf;

use anyhow::Result;
use zoo::{BatchedLM, CausalLM, Device, Error, PerplexityOptions, Tensor};

const CTX: usize = 64;

/// Nats per token, and relative on the figure: f32 rounding of the logits (the
/// fixtures' largest per-token difference measured 3.2e-6, the f32 safetensors model
/// against its own token-by-token forward). A window cut one position off, or a
/// missing BOS, moves tokens by tenths of a nat.
const TOL: f64 = 3e-5;

fn fixture(arch: &str, variant: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(arch)
        .join(variant)
        .join(file)
}

/// The beginning of the committed perplexity text, as the model's tokenizer reads a
/// document (BOS where it adds one): about 1,400 tokens on the fixtures' byte vocabulary.
fn text_tokens(loaded: &zoo::Loaded) -> Result<Vec<u32>> {
    let text = std::fs::read_to_string(
        zoo_tests::data_dir().join("perplexity/python-3.11-datamodel-types.txt"),
    )?;
    let end = text.char_indices().nth(1400).map_or(text.len(), |(i, _)| i);
    Ok(loaded.tokenizer.encode_document(&text[..end])?)
}

fn options(chunks: Option<usize>, parallel: usize) -> PerplexityOptions {
    PerplexityOptions {
        ctx: CTX,
        chunks,
        parallel,
    }
}

fn ppl(
    model: &mut dyn CausalLM,
    tokens: &[u32],
    bos: Option<u32>,
    o: &PerplexityOptions,
) -> zoo::Result<zoo::Perplexity> {
    zoo::perplexity(model, tokens, bos, o, |_| {})
}

/// Each scored token's nll computed without zoo::perplexity: windows of CTX tokens
/// back to back, `bos` first in each, one token per forward from an empty cache, the
/// logits of positions CTX/2..=CTX-2 against the next token, log-softmax in f64.
fn token_by_token(
    model: &mut dyn CausalLM,
    tokens: &[u32],
    bos: Option<u32>,
    windows: usize,
) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for w in 0..windows {
        let mut t = tokens[w * CTX..(w + 1) * CTX].to_vec();
        if let Some(b) = bos {
            t[0] = b;
        }
        model.reset_cache()?;
        for pos in 0..CTX - 1 {
            let ids = Tensor::new(&t[pos..pos + 1], &Device::Cpu)?.unsqueeze(0)?;
            let row = model.forward(&ids, pos)?.flatten_all()?.to_vec1::<f32>()?;
            if pos >= CTX / 2 {
                let lse = row.iter().map(|&x| f64::from(x).exp()).sum::<f64>().ln();
                out.push(lse - f64::from(row[t[pos + 1] as usize]));
            }
        }
    }
    Ok(out)
}

/// Asserts that two runs scored the same tokens to within `tol` nats each and that
/// their figures agree to `tol` relative.
fn assert_close(got: &zoo::Perplexity, want_nll: &[f64], tol: f64) {
    assert_eq!(got.token_nll.len(), want_nll.len());
    for (i, (g, w)) in got.token_nll.iter().zip(want_nll).enumerate() {
        assert!((g - w).abs() < tol, "token {i}: nll {g} vs {w}");
    }
    let want = (want_nll.iter().sum::<f64>() / want_nll.len() as f64).exp();
    assert!(
        ((got.ppl - want) / want).abs() < tol,
        "PPL {} vs {want} computed token by token",
        got.ppl
    );
}

#[test]
fn windows_batched_together_give_the_bits_of_one_window_per_step() -> Result<()> {
    let mut loaded = zoo::load(
        fixture("quantized-llama", "q8_0", "model.gguf"),
        &Default::default(),
    )?;
    assert!(loaded.model.batched().is_some());
    let tokens = text_tokens(&loaded)?;
    let bos = loaded.tokenizer.added_bos()?;
    let alone = ppl(&mut loaded.model, &tokens, bos, &options(None, 1))?;
    assert!(alone.batched);
    // 3 does not divide the window count (the last step is short); 32 runs all at once.
    for parallel in [3, 32] {
        let together = ppl(&mut loaded.model, &tokens, bos, &options(None, parallel))?;
        let bits =
            |p: &zoo::Perplexity| p.token_nll.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&together), bits(&alone), "parallel {parallel}");
        assert_eq!(together.ppl.to_bits(), alone.ppl.to_bits());
        assert_eq!(together.uncertainty, alone.uncertainty);
    }
    Ok(())
}

#[test]
fn the_figure_is_exp_mean_nll_of_a_token_by_token_forward_with_bos_in_each_window() -> Result<()> {
    let mut loaded = zoo::load(
        fixture("quantized-llama", "q8_0", "model.gguf"),
        &Default::default(),
    )?;
    let tokens = text_tokens(&loaded)?;
    let windows = 5;
    // The fixture's vocabulary adds no BOS; id 256 (`<s>`) stands in for one, so the
    // replacement of each window's first token is checked too.
    for bos in [loaded.tokenizer.added_bos()?, Some(256)] {
        let got = ppl(&mut loaded.model, &tokens, bos, &options(Some(windows), 4))?;
        assert_eq!(got.windows, windows);
        assert_eq!(got.token_nll.len(), windows * (CTX - 1 - CTX / 2));
        let want = token_by_token(&mut loaded.model, &tokens, bos, windows)?;
        assert_close(&got, &want, TOL);
    }
    // BOS changes the figure: the replacement is not a no-op.
    let a = ppl(&mut loaded.model, &tokens, None, &options(Some(windows), 4))?;
    let b = ppl(
        &mut loaded.model,
        &tokens,
        Some(256),
        &options(Some(windows), 4),
    )?;
    assert_ne!(a.ppl, b.ppl);
    Ok(())
}

/// The q8_0 fixture with its batched forward hidden, to run the fallback on the same
/// weights.
struct Unbatched(zoo::Model);

impl CausalLM for Unbatched {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> zoo::Result<Tensor> {
        self.0.forward(input_ids, seqlen_offset)
    }
    fn reset_cache(&mut self) -> zoo::Result<()> {
        self.0.reset_cache()
    }
    fn eos_token_ids(&self) -> &[u32] {
        self.0.eos_token_ids()
    }
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }
    fn architecture(&self) -> &'static str {
        self.0.architecture()
    }
    fn context_length(&self) -> usize {
        self.0.context_length()
    }
    fn device(&self) -> &Device {
        self.0.device()
    }
    fn batched(&mut self) -> Option<&mut dyn BatchedLM> {
        None
    }
}

#[test]
fn a_model_without_a_batched_forward_falls_back_to_one_token_per_forward() -> Result<()> {
    let loaded = zoo::load(
        fixture("quantized-llama", "q8_0", "model.gguf"),
        &Default::default(),
    )?;
    let tokens = text_tokens(&loaded)?;
    let mut model = loaded.model;
    let o = options(Some(6), 4);
    let batched = ppl(&mut model, &tokens, Some(256), &o)?;
    let mut unbatched = Unbatched(model);
    let fallback = ppl(&mut unbatched, &tokens, Some(256), &o)?;
    assert!(batched.batched && !fallback.batched);
    assert_close(&fallback, &batched.token_nll, TOL);

    // A safetensors entry built on candle-transformers has no batched forward at all;
    // its tokenizer.json adds no BOS.
    let mut loaded = zoo::load(fixture("deepseek-v2", "f32", ""), &Default::default())?;
    assert!(loaded.model.batched().is_none());
    let bos = loaded.tokenizer.added_bos()?;
    assert_eq!(bos, None);
    let tokens = text_tokens(&loaded)?;
    let got = ppl(&mut loaded.model, &tokens, bos, &options(Some(3), 4))?;
    assert!(!got.batched && got.uncertainty.is_some());
    let want = token_by_token(&mut loaded.model, &tokens, bos, 3)?;
    assert_close(&got, &want, TOL);
    Ok(())
}

#[test]
fn windows_are_cut_as_llama_perplexity_cuts_them() -> Result<()> {
    let mut loaded = zoo::load(
        fixture("quantized-llama", "q8_0", "model.gguf"),
        &Default::default(),
    )?;
    let tokens = text_tokens(&loaded)?;
    let all = tokens.len() / CTX;
    assert!(all >= 4, "{} tokens", tokens.len());
    let r = ppl(&mut loaded.model, &tokens, None, &options(None, 8))?;
    assert_eq!((r.windows, r.text_tokens), (all, tokens.len()));
    assert_eq!(r.token_nll.len(), all * 31);
    // `chunks` keeps the first windows: their scores are a prefix of the whole run's.
    let r2 = ppl(&mut loaded.model, &tokens, None, &options(Some(2), 8))?;
    assert_eq!(r2.token_nll[..], r.token_nll[..62]);
    // A text of exactly two windows is enough; the tail past whole windows is unscored.
    let r3 = ppl(
        &mut loaded.model,
        &tokens[..2 * CTX + 17],
        None,
        &options(None, 8),
    )?;
    assert_eq!(r3.token_nll[..], r.token_nll[..62]);
    Ok(())
}

#[test]
fn a_text_under_two_windows_and_a_window_beyond_the_context_are_refused() -> Result<()> {
    let mut loaded = zoo::load(
        fixture("quantized-llama", "q8_0", "model.gguf"),
        &Default::default(),
    )?;
    let tokens = text_tokens(&loaded)?;
    match ppl(
        &mut loaded.model,
        &tokens[..2 * CTX - 1],
        None,
        &options(None, 4),
    ) {
        Err(Error::TextTooShort { tokens, ctx }) => assert_eq!((tokens, ctx), (2 * CTX - 1, CTX)),
        other => panic!("expected TextTooShort, got {other:?}"),
    }
    // The fixture's context is 64 positions.
    let mut o = options(None, 4);
    o.ctx = CTX + 1;
    assert!(matches!(
        ppl(&mut loaded.model, &tokens, None, &o),
        Err(Error::Perplexity(_))
    ));
    o.ctx = 3;
    assert!(matches!(
        ppl(&mut loaded.model, &tokens, None, &o),
        Err(Error::Perplexity(_))
    ));
    assert!(matches!(
        ppl(&mut loaded.model, &tokens, None, &options(Some(0), 4)),
        Err(Error::Perplexity(_))
    ));
    Ok(())
}
