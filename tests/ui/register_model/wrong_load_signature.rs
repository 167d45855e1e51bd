use zoo::{register_model, CausalLM, Device, Result, Tensor};

#[register_model(name = "m", format = gguf, gguf_architectures = ["m"], load = M::open)]
pub struct M;

impl CausalLM for M {
    fn forward(&mut self, _: &Tensor, _: usize) -> Result<Tensor> { unimplemented!() }
    fn reset_cache(&mut self) -> Result<()> { Ok(()) }
    fn eos_token_ids(&self) -> &[u32] { &[] }
    fn vocab_size(&self) -> usize { 0 }
    fn architecture(&self) -> &'static str { "" }
    fn context_length(&self) -> usize { 0 }
    fn device(&self) -> &Device { unimplemented!() }
}
impl M {
    fn open(_: &std::path::Path) -> Result<Self> { Ok(M) }
}

fn main() {}
