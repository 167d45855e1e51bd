//! The registry: every architecture listed, downstream registration, and lookups of
//! the derived `Model` enum.

use std::ops::ControlFlow;
use std::str::FromStr;

use candle_core::{Device, Tensor};
use zoo::{Arch, CausalLM, Format};
use zoo_tests::byte_tokenizer_json;

// Link the out-of-tree crate: it is used only through the registry.
use zoo_extra_arch as _;

#[test]
fn registry_snapshot() {
    let entries: Vec<_> = zoo::registry::entries()
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "format": e.format.as_str(),
                "hf_architectures": e.hf_architectures,
                "model_types": e.model_types,
                "gguf_architectures": e.gguf_architectures,
                "description": e.description,
            })
        })
        .collect();
    insta::assert_json_snapshot!("registry", entries);
}

#[test]
fn every_registered_entry_has_an_arch_and_built_in_ones_their_own_variant() {
    let all = Arch::all();
    assert_eq!(all.len(), zoo::registry::entries().len());
    for e in zoo::registry::entries() {
        let a = Arch::of(e);
        assert_eq!(a.name(), e.name);
        let built_in = e.module.starts_with("zoo_models::");
        assert_eq!(!matches!(a, Arch::External(_)), built_in, "{}", e.name);
    }
}

#[test]
fn every_built_in_architecture_is_registered_once() {
    let names: Vec<&str> = zoo::registry::entries().iter().map(|e| e.name).collect();
    for a in Arch::ALL {
        assert_eq!(names.iter().filter(|n| **n == a.name()).count(), 1, "{a}");
        assert_eq!(Arch::from_str(a.name()).unwrap(), *a);
        assert_eq!(a.to_string(), a.name());
    }
}

#[test]
fn lookups_by_declared_strings() {
    assert_eq!(
        Arch::from_hf_architecture("LlamaForCausalLM").map(Arch::name),
        Some("llama")
    );
    assert_eq!(
        Arch::from_model_type("llama").map(Arch::name),
        Some("llama")
    );
    assert_eq!(
        Arch::from_gguf_architecture("llama").map(Arch::name),
        Some("quantized-llama")
    );
    assert_eq!(
        Arch::from_gguf_architecture("llama")
            .unwrap()
            .entry()
            .format,
        Format::Gguf
    );
    assert!(Arch::from_hf_architecture("GPT2LMHeadModel").is_none());
    let e = Arch::from_str("lama").unwrap_err().to_string();
    assert!(e.contains("did you mean `llama`?"), "{e}");
}

#[test]
fn downstream_crate_registers_and_loads_its_own_architecture() {
    let entry = zoo::registry::find("toy-bigram").unwrap();
    assert_eq!(entry.hf_architectures, &["ToyBigramForCausalLM"]);
    assert!(entry.module.starts_with("zoo_extra_arch"));

    let d = tempfile::tempdir().unwrap();
    let v = 258;
    // Each token's most likely successor is the next byte value.
    let mut table = vec![0f32; v * v];
    for i in 0..v {
        table[i * v + (i + 1) % v] = 5.0;
    }
    let t = Tensor::from_vec(table, (v, v), &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &[("bigram.weight", t)].into_iter().collect(),
        d.path().join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        d.path().join("config.json"),
        serde_json::json!({"architectures": ["ToyBigramForCausalLM"], "vocab_size": v, "max_position_embeddings": 32, "eos_token_id": 257}).to_string(),
    )
    .unwrap();
    std::fs::write(
        d.path().join("tokenizer.json"),
        byte_tokenizer_json().to_string(),
    )
    .unwrap();

    let mut l = zoo::load(d.path(), &Default::default()).unwrap();
    assert_eq!(l.entry.name, "toy-bigram");
    assert_eq!(l.model.architecture(), "toy-bigram");
    // Another crate's architecture is the derived enum's `External` variant, and `Arch`
    // names it like a built-in one.
    assert!(matches!(l.model, zoo::Model::External { .. }));
    assert_eq!(l.model.arch(), Arch::External(entry));
    assert_eq!(
        Arch::from_str("toy-bigram").unwrap().entry().module,
        entry.module
    );
    assert!(Arch::all().iter().any(|a| a.name() == "toy-bigram"));
    assert!(!Arch::ALL.iter().any(|a| a.name() == "toy-bigram"));
    // What the checkpoint said at load: no tokenizer_config.json, so no chat template.
    assert!(matches!(
        l.chat_template,
        Err(zoo::Error::NoChatTemplate { .. })
    ));
    assert_eq!(l.format, Format::Safetensors);
    let ids = l.tokenizer.encode("a", false).unwrap();
    let opts = zoo::GenerateOptions {
        max_tokens: 5,
        ..Default::default()
    };
    let g = zoo::generate(&mut l.model, &l.tokenizer, &ids, &opts, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(g.text, "bcdef");
    // The model's state really resets.
    l.model.reset_cache().unwrap();
    let e = l
        .model
        .forward(&Tensor::new(&[[1u32]], &Device::Cpu).unwrap(), 3)
        .unwrap_err();
    assert!(e.to_string().contains("empty cache"), "{e}");
}
