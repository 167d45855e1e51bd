use zoo::register_model;

#[register_model(name = "m", format = gguf, gguf_architectures = ["m"], load = load)]
pub fn load() {}

fn main() {}
