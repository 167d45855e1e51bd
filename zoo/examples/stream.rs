//! The engine from a downstream crate: one request, its tokens read as an async Stream.
//! `cargo run --release -p zoo --example stream -- MODEL.gguf "The capital of France is"`
use futures::StreamExt;

fn main() -> zoo::Result<()> {
    let arg = |i| std::env::args().nth(i).expect("usage: stream MODEL PROMPT");
    let loaded = zoo::load(arg(1), &Default::default())?;
    let ids = loaded.tokenizer.encode_prompt(&arg(2))?;
    let engine = zoo::Engine::start(loaded.model, loaded.tokenizer.into(), Default::default())?;
    let mut events = engine.submit(zoo::Request::new(ids, 32))?;
    futures::executor::block_on(async {
        while let Some(zoo::Event::Token { text, .. } | zoo::Event::Text(text)) =
            events.next().await
        {
            print!("{text}");
        }
    });
    Ok(())
}
