mod a {
    use zoo::{register_model, CausalLM, Device, Result, SafetensorsSource, Tensor};
    #[register_model(name = "alpha", format = safetensors, hf_architectures = ["AlphaForCausalLM"], load = M::load)]
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
    }
}

mod b {
    use zoo::{register_model, CausalLM, Device, Result, SafetensorsSource, Tensor};
    #[register_model(name = "beta", format = safetensors, hf_architectures = ["BetaForCausalLM", "AlphaForCausalLM"], load = N::load)]
    pub struct N;
        impl CausalLM for N {
        fn forward(&mut self, _: &Tensor, _: usize) -> Result<Tensor> { unimplemented!() }
        fn reset_cache(&mut self) -> Result<()> { Ok(()) }
        fn eos_token_ids(&self) -> &[u32] { &[] }
        fn vocab_size(&self) -> usize { 0 }
        fn architecture(&self) -> &'static str { "" }
        fn context_length(&self) -> usize { 0 }
        fn device(&self) -> &Device { unimplemented!() }
    }
    impl N {
        fn load(_: &SafetensorsSource, _: &Device) -> Result<Self> { Ok(N) }
    }
}

zoo::model_enum! { a::M, b::N }

fn main() {}
