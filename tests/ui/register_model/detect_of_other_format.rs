use zoo::{register_model, CausalLM, Device, GgufSource, Result, SafetensorsSource, Tensor};

// `detect` tells apart files of the entry's own format: a safetensors entry's detect
// function receives the safetensors source.
#[register_model(name = "m", format = safetensors, model_types = ["m"], load = M::load, detect = M::claims)]
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
    fn load(_: &SafetensorsSource, _: &Device) -> Result<Self> { Ok(M) }
    fn claims(_: &GgufSource) -> bool { true }
}

fn main() {}
