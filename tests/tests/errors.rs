//! Bad input gets a typed error that says what was expected, what was found and what
//! to do; never a panic, never silent success.

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use zoo::{Error, LoadOptions};
use zoo_tests::TinyLlama;

fn load_err(path: &Path) -> Error {
    zoo::load(path, &LoadOptions::default()).expect_err("loading must fail")
}

/// A small valid GGUF: llama metadata and one Q8_0 tensor.
fn write_gguf(path: &Path) {
    let t = Tensor::arange(0f32, 256., &Device::Cpu)
        .unwrap()
        .reshape((8, 32))
        .unwrap();
    let q = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
    let arch = gguf_file::Value::String("llama".into());
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(
        &mut f,
        &[("general.architecture", &arch)],
        &[("token_embd.weight", &q)],
    )
    .unwrap();
}

#[test]
fn truncated_gguf_in_the_tensor_data() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("model.gguf");
    write_gguf(&p);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = load_err(&p);
    assert!(matches!(e, Error::TruncatedGguf { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("token_embd.weight") && msg.contains("fetch it again"),
        "{msg}"
    );
}

#[test]
fn truncated_gguf_in_the_header() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("model.gguf");
    write_gguf(&p);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..40]).unwrap();
    let e = load_err(&p);
    assert!(matches!(e, Error::TruncatedGguf { .. }), "{e}");
    assert!(e.to_string().contains("header ends early"), "{e}");
}

#[test]
fn wrong_magic() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("model.gguf");
    std::fs::write(&p, b"GGUX\x03\x00\x00\x00 not a model at all").unwrap();
    let e = load_err(&p);
    assert!(matches!(e, Error::UnknownFormat { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("expected a GGUF file (magic `GGUF`)"), "{msg}");
    assert!(msg.contains("47 47 55 58") && msg.contains("GGUX"), "{msg}");
}

#[test]
fn empty_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("model.gguf");
    std::fs::write(&p, b"").unwrap();
    let e = load_err(&p);
    assert!(e.to_string().contains("an empty file"), "{e}");
}

#[test]
fn pytorch_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    for name in ["model.pt", "weights.pth"] {
        let p = d.path().join(name);
        // A legacy pickle header (protocol 2).
        std::fs::write(&p, b"\x80\x02}q\x00(X\x05\x00\x00\x00state").unwrap();
        let e = load_err(&p);
        assert!(matches!(e, Error::UnsupportedFormat { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("PyTorch") && msg.contains("safe_serialization=True"),
            "{msg}"
        );
    }
    // A zip-format torch.save file.
    let p = d.path().join("pytorch_model.bin");
    std::fs::write(&p, b"PK\x03\x04archive/data.pkl").unwrap();
    assert!(matches!(load_err(&p), Error::UnsupportedFormat { .. }));
    // A directory holding only PyTorch weights.
    let dir = d.path().join("hf");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        TinyLlama::default().config().to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("pytorch_model.bin"), b"PK\x03\x04").unwrap();
    let e = load_err(&dir);
    assert!(matches!(e, Error::UnsupportedFormat { .. }), "{e}");
}

#[test]
fn onnx_and_tensorflow() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("model.onnx");
    std::fs::write(&p, b"\x08\x07\x12\x07pytorch").unwrap();
    assert!(load_err(&p).to_string().contains("ONNX"));
    let p = d.path().join("tf_model.h5");
    std::fs::write(&p, b"\x89HDF\r\n\x1a\n").unwrap();
    assert!(load_err(&p).to_string().contains("TensorFlow"));
}

#[test]
fn config_missing_fields() {
    let d = tempfile::tempdir().unwrap();
    let tiny = TinyLlama::default();
    let mut config = tiny.config();
    config.as_object_mut().unwrap().remove("hidden_size");
    tiny.write(d.path(), &config).unwrap();
    let e = load_err(d.path());
    assert!(matches!(e, Error::Config { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("missing field `hidden_size`"), "{msg}");
    assert!(msg.contains("config.json"), "{msg}");
}

#[test]
fn unknown_architecture_lists_registered_and_closest() {
    let d = tempfile::tempdir().unwrap();
    let tiny = TinyLlama::default();
    let mut config = tiny.config();
    config["architectures"] = serde_json::json!(["LlamaForCausalLMM"]);
    config["model_type"] = serde_json::json!("llamma-x");
    tiny.write(d.path(), &config).unwrap();
    let e = load_err(d.path());
    assert!(matches!(e, Error::UnknownArchitecture { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("`LlamaForCausalLMM`"), "{msg}");
    assert!(
        msg.contains("registered: ") && msg.contains("llama"),
        "{msg}"
    );
    assert!(msg.contains("did you mean `LlamaForCausalLM`?"), "{msg}");
}

#[test]
fn gguf_of_unknown_architecture() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("model.gguf");
    let t = Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, GgmlDType::F32).unwrap();
    let arch = gguf_file::Value::String("mamba9".into());
    let mut f = std::fs::File::create(&p).unwrap();
    gguf_file::write(&mut f, &[("general.architecture", &arch)], &[("x", &q)]).unwrap();
    drop(f);
    let e = load_err(&p);
    assert!(matches!(e, Error::UnknownArchitecture { .. }), "{e}");
    assert!(e.to_string().contains("`mamba9`"), "{e}");
}

#[test]
fn missing_config_and_missing_weights() {
    let d = tempfile::tempdir().unwrap();
    let e = load_err(d.path());
    assert!(
        matches!(
            e,
            Error::MissingFile {
                what: "config.json",
                ..
            }
        ),
        "{e}"
    );
    std::fs::write(
        d.path().join("config.json"),
        TinyLlama::default().config().to_string(),
    )
    .unwrap();
    let e = load_err(d.path());
    assert!(
        matches!(
            e,
            Error::MissingFile {
                what: "*.safetensors weights",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn missing_path() {
    let e = load_err(Path::new("/nonexistent/zoo/model.gguf"));
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

/// An architecture whose candle model masks its sliding window wrongly past the window
/// (Mistral 7B v0.1's config) refuses a sequence longer than the window with a typed
/// error instead of computing it wrongly.
/// A copy of the `f32` fixture of `arch` (safetensors) with its config.json edited.
fn f32_fixture_with(arch: &str, edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/{arch}/f32"));
    let d = tempfile::tempdir().unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    ] {
        std::fs::copy(fixture.join(f), d.path().join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap())
            .unwrap();
    edit(&mut config);
    std::fs::write(d.path().join("config.json"), config.to_string()).unwrap();
    d
}

/// zoo's Llama decoder masks no sliding window (Mistral, Starcoder2, Phi-3 are on it): a
/// sequence longer than the window is refused, not computed. (Gemma 2, on zoo's Gemma
/// decoder, computes it: fixture `gemma2::f32-window-4`.)
#[test]
fn a_sequence_past_a_mis_masked_sliding_window_is_refused() {
    use zoo::CausalLM;
    for arch in ["mistral", "starcoder2", "phi3"] {
        let d = f32_fixture_with(arch, |c| c["sliding_window"] = 8.into());
        let mut l = zoo::load(d.path(), &LoadOptions::default()).unwrap();
        let ids = Tensor::new(&[[256u32, 72, 101, 108, 108, 111, 44, 32]], &Device::Cpu).unwrap();
        l.model.forward(&ids, 0).unwrap();
        let next = Tensor::new(&[[119u32]], &Device::Cpu).unwrap();
        match l.model.forward(&next, 8).unwrap_err() {
            Error::PromptTooLong {
                prompt_tokens,
                context_length,
            } => assert_eq!((prompt_tokens, context_length), (9, 8), "{arch}"),
            e => panic!("{arch}: expected PromptTooLong, got {e}"),
        }
    }
}

/// A config that asks for RoPE scaling a model would ignore is refused (YaRN in a Gemma 2
/// config: wrong at every position), with a Config error that names the scaling; so is
/// a LongRoPE whose factors do not fit the heads, or a YaRN factor below 1. (zoo's Llama
/// decoder computes YaRN: conformance `qwen2::f32-yarn`.)
#[test]
fn rope_scaling_a_model_would_ignore_is_refused() {
    let with_scaling = |arch: &str, scaling: serde_json::Value| {
        let d = f32_fixture_with(arch, |c| c["rope_scaling"] = scaling);
        let loaded = zoo::load(d.path(), &LoadOptions::default());
        (d, loaded)
    };
    let yarn = serde_json::json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32});
    let arch = "gemma2";
    match with_scaling(arch, yarn.clone()).1 {
        Err(e @ Error::Config { .. }) => assert!(e.to_string().contains("yarn"), "{arch}: {e}"),
        Err(e) => panic!("{arch}: expected a Config error, got {e}"),
        Ok(_) => panic!("{arch}: rope scaling that it would ignore was accepted"),
    }
    // LongRoPE is computed (conformance: phi3::f32-longrope); factors that do not fit
    // the heads are refused, naming the list the model's contexts choose.
    let longrope = |short: Vec<f64>| serde_json::json!({"type": "longrope", "short_factor": short, "long_factor": vec![2.0; 8]});
    assert!(with_scaling("phi3", longrope(vec![1.0; 8])).1.is_ok());
    assert!(with_scaling("qwen2", yarn.clone()).1.is_ok());
    assert!(with_scaling("lfm2", yarn.clone()).1.is_ok());
    assert!(with_scaling("granite-moe-hybrid", yarn.clone()).1.is_ok());
    let shrinking = serde_json::json!({"rope_type": "yarn", "factor": 0.5});
    match with_scaling("qwen2", shrinking).1 {
        Err(e @ Error::Config { .. }) => assert!(e.to_string().contains("yarn"), "{e}"),
        Err(e) => panic!("qwen2: expected a Config error, got {e}"),
        Ok(_) => panic!("qwen2: a YaRN factor below 1 was accepted"),
    }
    match with_scaling("phi3", longrope(vec![1.0; 3])).1 {
        Err(e @ Error::Config { .. }) => {
            assert!(e.to_string().contains("LongRoPE `short_factor`"), "{e}")
        }
        Err(e) => panic!("phi3: expected a Config error, got {e}"),
        Ok(_) => panic!("phi3: LongRoPE factors that do not fit the heads were accepted"),
    }
}

/// GGUF v3 bytes written by hand: `kvs` as (key, u32 value), one tensor of `dims` (f32)
/// at offset 0, then `data_len` bytes of data after 32-byte alignment.
fn raw_gguf(kvs: &[(&str, u32)], dims: &[u64], data_len: usize) -> Vec<u8> {
    let mut b = Vec::new();
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend((kvs.len() as u64 + 1).to_le_bytes());
    string(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes()); // string
    string(&mut b, "llama");
    for (k, v) in kvs {
        string(&mut b, k);
        b.extend(4u32.to_le_bytes()); // u32
        b.extend(v.to_le_bytes());
    }
    string(&mut b, "token_embd.weight");
    b.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend(d.to_le_bytes());
    }
    b.extend(0u32.to_le_bytes()); // f32
    b.extend(0u64.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend(std::iter::repeat_n(0u8, data_len));
    b
}

#[test]
fn a_gguf_whose_dimensions_overflow_is_invalid_not_empty() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("model.gguf");
    std::fs::write(&p, raw_gguf(&[], &[1 << 40; 4], 64)).unwrap();
    let e = zoo::ModelSource::open(&p).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidGguf { detail, .. } if detail.contains("overflows")),
        "{e}"
    );
}

#[test]
fn a_gguf_with_alignment_zero_is_an_error_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("model.gguf");
    std::fs::write(&p, raw_gguf(&[("general.alignment", 0)], &[4, 4], 64)).unwrap();
    let e = zoo::ModelSource::open(&p).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidGguf { detail, .. } if detail.contains("alignment")),
        "{e}"
    );
    // The same bytes with a sane alignment open.
    std::fs::write(&p, raw_gguf(&[("general.alignment", 32)], &[4, 4], 64)).unwrap();
    zoo::ModelSource::open(&p).unwrap();
}

/// config.json with what the model would compute differently is refused with a typed
/// error naming the field: on zoo's decoders, YaRN that does not enlarge, a NoPE layer
/// list that does not fit, a multiplier of 0, a head size the tensors contradict, a
/// rotary share past 1, LFM2's convolution biases and layer kinds that do not fit,
/// Granite 4.0's Mamba layers and experts.
#[test]
fn configs_candle_would_compute_differently_are_refused() {
    for (arch, patch, says) in [
        // Granite 4.0 hybrid: Mamba layers and the MoE block are not computed.
        (
            "granite-moe-hybrid",
            serde_json::json!({"layer_types": ["mamba", "full_attention"]}),
            "layer kind \"mamba\"",
        ),
        (
            "granite-moe-hybrid",
            serde_json::json!({"num_local_experts": 4}),
            "num_local_experts",
        ),
        // LFM2's convolution: biases it does not have, layer kinds that do not fit.
        ("lfm2", serde_json::json!({"conv_bias": true}), "conv_bias"),
        (
            "lfm2",
            serde_json::json!({"layer_types": ["conv"]}),
            "`layer_types` [\"conv\"] for 2 layers",
        ),
        // zoo's Llama decoder: a YaRN that does not enlarge, a NoPE layer list that does
        // not fit, sizes that are not the checkpoint's.
        (
            "smollm3",
            serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 0.5}}),
            "yarn rope scaling",
        ),
        (
            "qwen2-moe",
            serde_json::json!({"head_dim": 32}),
            "has shape [64, 64] where the hyper-parameters say [128, 64]",
        ),
        (
            "qwen2-moe",
            serde_json::json!({"decoder_sparse_step": 0}),
            "decoder_sparse_step",
        ),
        (
            "smollm3",
            serde_json::json!({"no_rope_layers": [1]}),
            "no_rope_layers",
        ),
        (
            "smollm3",
            serde_json::json!({"no_rope_layers": null, "no_rope_layer_interval": 0}),
            "no_rope_layer_interval",
        ),
        (
            "granite",
            serde_json::json!({"logits_scaling": 0.0}),
            "logits_scaling",
        ),
        (
            "phi3",
            serde_json::json!({"partial_rotary_factor": 1.5}),
            "partial_rotary_factor",
        ),
        ("olmo", serde_json::json!({"clip_qkv": -1.0}), "clip_qkv"),
    ] {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/{arch}/f32"));
        let d = tempfile::tempdir().unwrap();
        for f in [
            "model.safetensors",
            "tokenizer.json",
            "generation_config.json",
        ] {
            std::fs::copy(fixture.join(f), d.path().join(f)).unwrap();
        }
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap())
                .unwrap();
        for (key, value) in patch.as_object().unwrap() {
            config[key] = value.clone();
        }
        std::fs::write(d.path().join("config.json"), config.to_string()).unwrap();
        match load_err(d.path()) {
            Error::Config { detail, .. } => assert!(detail.contains(says), "{arch}: {detail}"),
            e => panic!("{arch}: expected a config error, got {e}"),
        }
    }
}
