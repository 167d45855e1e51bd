//! Helpers of the zoo test suite: the recorded llama.cpp references, the real models,
//! tiny deterministic checkpoints, and the greedy-continuation comparison.

pub mod batch;
pub mod fuzz;
pub mod hostile;
pub mod http;
pub mod tolerance;
pub mod tools;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;
use zoo::{CausalLM, Device, Tensor};

/// What llama.cpp produced on a real model (tests/data/reference/*.json).
#[derive(Debug, Deserialize)]
pub struct Reference {
    pub model: String,
    pub add_bos_token: bool,
    pub tokenize: Vec<TokenizeCase>,
    pub generate: Vec<GenerateCase>,
}

#[derive(Debug, Deserialize)]
pub struct TokenizeCase {
    pub text: String,
    pub ids: Vec<u32>,
}

#[derive(Debug, Deserialize)]
pub struct GenerateCase {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub continuation_ids: Vec<u32>,
    pub continuation_text: String,
    /// The reference's top logits at every greedy step, `(id, logit)`, largest first
    /// (the f32-KV references; empty in the f16-KV ones).
    #[serde(default)]
    pub greedy_top: Vec<Vec<(u32, f32)>>,
    /// llama.cpp against itself, the prompt and continuation as one batch (the f32-KV
    /// references): the reference's own noise.
    #[serde(default)]
    pub one_batch: Option<OneBatch>,
}

/// What llama.cpp's logits did when the same tokens ran as one batch instead of one at
/// a time.
#[derive(Debug, Deserialize)]
pub struct OneBatch {
    /// Max |logit difference| over the recorded top logits, over all steps.
    pub max_top_diff: f32,
    /// The steps whose argmax differs, with the recorded gap there: `[step, gap]`.
    pub flips: Vec<(usize, f32)>,
}

/// The device the suites run their models on: `ZOO_DEVICE` (cpu, cuda, cuda:N, metal,
/// auto), the CPU when it is unset. A device this build lacks is an error that says
/// how to build with it.
pub fn test_device() -> Result<Device> {
    match std::env::var("ZOO_DEVICE") {
        Ok(s) if !s.trim().is_empty() => Ok(s.parse::<zoo::DeviceSpec>()?.resolve()?),
        _ => Ok(Device::Cpu),
    }
}

/// The tests/ directory: `ZOO_TESTS_DIR` when set (a test binary run on another
/// machine, away from the tree it was built in: `cargo xtask gpu-check`), else this
/// crate's.
pub fn tests_dir() -> PathBuf {
    match std::env::var_os("ZOO_TESTS_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf(),
    }
}

/// The directory of committed test data.
pub fn data_dir() -> PathBuf {
    tests_dir().join("data")
}

/// Reads `tests/data/reference/{name}.json`.
pub fn reference(name: &str) -> Result<Reference> {
    let p = data_dir().join("reference").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// The path of a known real model, fetched into the cache on first use.
pub fn real_model(name: &str) -> Result<PathBuf> {
    let m = zoo_fetch::known(name).with_context(|| format!("{name} is not a known model"))?;
    m.ensure(&mut |_| {}).with_context(|| {
        format!("the real model `{name}` is needed by this test; fetch it with `cargo run -p zoo-cli -- fetch {name}`")
    })
}

/// The logits of the last of `ids` fed at `offset`, checked to be what
/// [`CausalLM::forward`] promises: `[1, vocab]`, f32, finite.
pub fn last_logits(m: &mut dyn CausalLM, ids: &[u32], offset: usize) -> Result<Vec<f32>> {
    let t = Tensor::new(ids, m.device())?.unsqueeze(0)?;
    let l = m.forward(&t, offset)?;
    anyhow::ensure!(
        l.dims() == [1, m.vocab_size()],
        "logits shape {:?}, expected [1, {}]",
        l.dims(),
        m.vocab_size()
    );
    anyhow::ensure!(
        l.dtype() == zoo::DType::F32,
        "logits dtype {:?}, expected f32",
        l.dtype()
    );
    let v: Vec<f32> = l.squeeze(0)?.to_vec1()?;
    anyhow::ensure!(v.iter().all(|x| x.is_finite()), "non-finite logits");
    Ok(v)
}

/// Our logits at each of the reference's greedy steps, fed the reference's tokens (its
/// context at every step, whatever we would have picked): the prompt in one forward,
/// then one token per step.
pub fn teacher_forced(
    m: &mut dyn CausalLM,
    prompt: &[u32],
    reference: &[u32],
) -> Result<Vec<Vec<f32>>> {
    m.reset_cache()?;
    let mut logits = last_logits(m, prompt, 0)?;
    let mut all = Vec::with_capacity(reference.len());
    for (i, &t) in reference.iter().enumerate() {
        all.push(logits);
        if i + 1 < reference.len() {
            logits = last_logits(m, &[t], prompt.len() + i)?;
        } else {
            logits = Vec::new();
        }
    }
    Ok(all)
}

/// The index of the largest value (the first one on ties, as llama.cpp's greedy sampler).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// A deterministic pseudo-random stream (xorshift64*), for fixture weights.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545F4914F6CDD1D);
        // Uniform in [-1, 1).
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn tensor(&mut self, shape: &[usize], scale: f32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.next_f32() * scale).collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    }
}

/// GPT-2's byte-to-character map, for a byte-level tokenizer.json.
fn bytes_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec![' '; 256];
    for (b, c) in bs.into_iter().zip(cs) {
        out[b as usize] = char::from_u32(c).expect("valid char");
    }
    out
}

/// A byte-level BPE tokenizer.json with the 256 byte tokens, `<s>` (256) and `</s>` (257).
pub fn byte_tokenizer_json() -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    for (i, c) in bytes_to_unicode().into_iter().enumerate() {
        vocab.insert(c.to_string(), i.into());
    }
    vocab.insert("<s>".into(), 256.into());
    vocab.insert("</s>".into(), 257.into());
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            {"id": 256, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 257, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    })
}

/// The shape of a tiny Llama checkpoint.
#[derive(Debug, Clone)]
pub struct TinyLlama {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub rope_theta: f64,
    pub seed: u64,
}

impl Default for TinyLlama {
    fn default() -> Self {
        Self {
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 258,
            max_positions: 64,
            rope_theta: 10_000.0,
            seed: 42,
        }
    }
}

impl TinyLlama {
    /// config.json as transformers 4.x writes it.
    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": self.max_positions,
            "rms_norm_eps": 1e-5,
            "rope_theta": self.rope_theta,
            "bos_token_id": 256,
            "eos_token_id": 257,
            "tie_word_embeddings": false,
            "torch_dtype": "float32"
        })
    }

    /// Writes config.json (as given), model.safetensors and tokenizer.json into `dir`.
    pub fn write(&self, dir: &Path, config: &serde_json::Value) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut rng = Rng::new(self.seed);
        let (h, i, v) = (self.hidden, self.intermediate, self.vocab);
        let head_dim = h / self.heads;
        let kv = self.kv_heads * head_dim;
        let mut t: HashMap<String, Tensor> = HashMap::new();
        t.insert(
            "model.embed_tokens.weight".into(),
            rng.tensor(&[v, h], 0.5)?,
        );
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            t.insert(
                format!("{p}.self_attn.q_proj.weight"),
                rng.tensor(&[h, h], 0.2)?,
            );
            t.insert(
                format!("{p}.self_attn.k_proj.weight"),
                rng.tensor(&[kv, h], 0.2)?,
            );
            t.insert(
                format!("{p}.self_attn.v_proj.weight"),
                rng.tensor(&[kv, h], 0.2)?,
            );
            t.insert(
                format!("{p}.self_attn.o_proj.weight"),
                rng.tensor(&[h, h], 0.2)?,
            );
            t.insert(
                format!("{p}.mlp.gate_proj.weight"),
                rng.tensor(&[i, h], 0.2)?,
            );
            t.insert(format!("{p}.mlp.up_proj.weight"), rng.tensor(&[i, h], 0.2)?);
            t.insert(
                format!("{p}.mlp.down_proj.weight"),
                rng.tensor(&[h, i], 0.2)?,
            );
            t.insert(
                format!("{p}.input_layernorm.weight"),
                (rng.tensor(&[h], 0.1)? + 1.0)?,
            );
            t.insert(
                format!("{p}.post_attention_layernorm.weight"),
                (rng.tensor(&[h], 0.1)? + 1.0)?,
            );
        }
        t.insert("model.norm.weight".into(), (rng.tensor(&[h], 0.1)? + 1.0)?);
        t.insert("lm_head.weight".into(), rng.tensor(&[v, h], 0.5)?);
        candle_core::safetensors::save(&t, dir.join("model.safetensors"))?;
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(config)?,
        )?;
        std::fs::write(
            dir.join("tokenizer.json"),
            serde_json::to_string(&byte_tokenizer_json())?,
        )?;
        Ok(())
    }
}

/// llama.cpp's vocab-only GGUFs with their test inputs and expected ids
/// (`vendor/llama.cpp/models/ggml-vocab-*`), from the source distribution of
/// `llama-cpp-python==0.3.36`, fetched once with `pip download --no-deps` into the cache.
pub fn llama_cpp_vocab_dir() -> Result<PathBuf> {
    const VERSION: &str = "0.3.36";
    let root = zoo_fetch::cache_dir().join(format!("llama-cpp-python-{VERSION}"));
    let models = root.join(format!(
        "llama_cpp_python-{VERSION}/vendor/llama.cpp/models"
    ));
    if models.join("ggml-vocab-gpt-2.gguf.out").is_file() {
        return Ok(models);
    }
    std::fs::create_dir_all(&root)?;
    let python = std::env::var("ZOO_PYTHON").unwrap_or_else(|_| "python3".into());
    let sdist = root.join(format!("llama_cpp_python-{VERSION}.tar.gz"));
    if !sdist.is_file() {
        let status = std::process::Command::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--no-binary",
                "llama-cpp-python",
                "-d",
            ])
            .arg(&root)
            .arg(format!("llama-cpp-python=={VERSION}"))
            .status()
            .with_context(|| format!("running {python} -m pip"))?;
        anyhow::ensure!(
            status.success(),
            "pip download of llama-cpp-python=={VERSION} failed"
        );
    }
    // Unpack only the vocab files, with Python's tarfile (no code from the package runs).
    let script = "import sys, tarfile\n\
        t = tarfile.open(sys.argv[1])\n\
        ms = [m for m in t.getmembers() if '/vendor/llama.cpp/models/ggml-vocab-' in m.name and m.isfile()]\n\
        t.extractall(sys.argv[2], members=ms, filter='data')\n";
    let status = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&sdist)
        .arg(&root)
        .status()?;
    anyhow::ensure!(status.success(), "unpacking {} failed", sdist.display());
    Ok(models)
}

/// The cases of one `ggml-vocab-*.gguf`: `(input, expected ids)`, parsed as
/// llama.cpp's test-tokenizer-0 does.
pub fn vocab_cases(gguf: &Path) -> Result<Vec<(String, Vec<u32>)>> {
    let inp = std::fs::read_to_string(format!("{}.inp", gguf.display()))?;
    let out = std::fs::read_to_string(format!("{}.out", gguf.display()))?;
    let inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let outputs: Vec<&str> = out.split('\n').collect();
    let mut cases = Vec::new();
    for (i, text) in inputs.iter().enumerate() {
        if i == inputs.len() - 1 && text.is_empty() {
            break;
        }
        let line = outputs
            .get(i)
            .with_context(|| format!("{}: no output line {i}", gguf.display()))?;
        let ids = line
            .split_whitespace()
            .map(|t| t.parse::<u32>())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        cases.push((text.to_string(), ids));
    }
    Ok(cases)
}

/// Every text of `r.tokenize` and every prompt of `r.generate` whose ids differ from
/// llama.cpp's, described for an assertion message.
pub fn tokenization_failures(tk: &zoo::Tokenizer, r: &Reference) -> Vec<String> {
    let mut failures = Vec::new();
    for case in &r.tokenize {
        let ids = tk.encode(&case.text, false).unwrap();
        if ids != case.ids {
            failures.push(format!(
                "{:?}\n  llama.cpp: {:?}\n  zoo:       {:?}",
                case.text, case.ids, ids
            ));
        }
    }
    for case in &r.generate {
        let ids = tk.encode_prompt(&case.prompt).unwrap();
        if ids != case.prompt_ids {
            failures.push(format!(
                "prompt {:?}\n  llama.cpp: {:?}\n  zoo:       {:?}",
                case.prompt, case.prompt_ids, ids
            ));
        }
    }
    failures
}

/// A real model against llama.cpp with an f32 KV cache (`cargo xtask refgen
/// --real-models`, tests/data/reference/f32-kv/{name}.json): the prompts of its
/// f16-KV reference and two long ones (47 to 80 tokens, at least the 32 rows from which
/// K-quant prompts, too, take zoo's prompt kernels, tiles and padding included), each
/// tokenized exactly as llama.cpp does, then teacher-forced on llama.cpp's greedy
/// continuation and judged step by step on llama.cpp's own top logits under `rule`
/// ([`tolerance::judge_greedy`]: the rule's floor of equal tokens, near ties on the
/// reference's gap, the logits of every step where the rule bounds them).
pub fn assert_matches_llama_cpp_f32_kv(
    loaded: &mut zoo::Loaded,
    name: &str,
    rule: tolerance::Rule,
) {
    let r = reference(&format!("f32-kv/{name}")).unwrap();
    let failures = tokenization_failures(&loaded.tokenizer, &r);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let long = r
        .generate
        .iter()
        .filter(|c| c.prompt_ids.len() >= 32)
        .count();
    assert!(
        long >= 2,
        "{name}: {long} long prompts in the reference, expected 2"
    );
    let mut problems = Vec::new();
    for case in &r.generate {
        let chose =
            teacher_forced(&mut loaded.model, &case.prompt_ids, &case.continuation_ids).unwrap();
        let (g, verdict) =
            tolerance::judge_greedy(rule, &chose, &case.continuation_ids, &case.greedy_top);
        eprintln!(
            "{name} {:?} ({} prompt tokens): {} of {} steps pick llama.cpp's token (floor {}), first other at {:?}, llama.cpp's gap there {:?}, max |logit - llama.cpp| over its top {} = {:.2e} at step {}",
            case.prompt,
            case.prompt_ids.len(),
            g.matched,
            g.len,
            rule.greedy_floor(g.len),
            g.first_difference,
            g.reference_gap,
            case.greedy_top.first().map_or(0, |t| t.len()),
            g.max_step_diff,
            g.worst_step
        );
        if let Err(e) = verdict {
            problems.push(format!("{:?}: {e}", case.prompt));
        }
    }
    assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
}

/// The pinned `openai` package (and its httpx) for the end-to-end server test.
pub const OPENAI_PACKAGE: &str = "openai==3.54.0";

/// A Python with [`OPENAI_PACKAGE`]: `$ZOO_OPENAI_PYTHON`, else a virtual environment
/// in the zoo cache made once with pip (under a lock, as the real models are fetched).
pub fn openai_python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ZOO_OPENAI_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = zoo_fetch::cache_dir().join("openai-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(format!(".ready-{OPENAI_PACKAGE}"));
    if ready.is_file() {
        return Ok(python);
    }
    std::fs::create_dir_all(zoo_fetch::cache_dir())?;
    let system = std::env::var("ZOO_PYTHON").unwrap_or_else(|_| "python3".into());
    let run = |c: &mut std::process::Command| -> Result<()> {
        let s = c.status().with_context(|| format!("running {c:?}"))?;
        anyhow::ensure!(s.success(), "{c:?} failed: {s}");
        Ok(())
    };
    run(std::process::Command::new(&system)
        .args(["-m", "venv"])
        .arg(&venv))?;
    run(std::process::Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-q",
        OPENAI_PACKAGE,
    ]))?;
    std::fs::write(&ready, "")?;
    Ok(python)
}
