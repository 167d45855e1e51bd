//! The chat templates of the real GGUFs rendered by zoo (minijinja) against what
//! Python's jinja2 renders in transformers' chat-template environment
//! (tests/data/chat/templates.json), and the typed error of a model without one.

use serde::Deserialize;
use zoo::{ChatTemplate, Message, ModelSource};
use zoo_tests::{data_dir, real_model};

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    model: String,
    messages: Vec<Message>,
    add_generation_prompt: bool,
    expected: String,
}

#[test]
fn real_templates_render_as_transformers_renders_them() {
    let text = std::fs::read_to_string(data_dir().join("chat/templates.json")).unwrap();
    let cases: Cases = serde_json::from_str(&text).unwrap();
    assert_eq!(cases.cases.len(), 8);
    for case in &cases.cases {
        let source = ModelSource::open(real_model(&case.model).unwrap()).unwrap();
        let t = ChatTemplate::for_source(&source).unwrap();
        let got = t
            .render(&case.messages, case.add_generation_prompt)
            .unwrap();
        assert_eq!(got, case.expected, "{} {:?}", case.model, case.messages);
    }
}

#[test]
fn a_base_model_without_a_template_is_a_typed_error() {
    let source = ModelSource::open(real_model("gemma3").unwrap()).unwrap();
    let e = ChatTemplate::for_source(&source).unwrap_err();
    assert!(matches!(e, zoo::Error::NoChatTemplate { .. }), "{e}");
    assert!(e.to_string().contains("ChatTemplate::new"), "{e}");
}
