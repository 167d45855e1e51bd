// Uses zoo-core directly (`crate = ...`) so the error lists no implementors of the
// workspace's own models, which change whenever an architecture is added.
use zoo_core::{Device, GgufSource, Result};
use zoo_macros::register_model;

#[register_model(crate = zoo_core, name = "m", format = gguf, gguf_architectures = ["m"], load = M::load)]
pub struct M;

impl M {
    fn load(_: &GgufSource, _: &Device) -> Result<Self> { Ok(M) }
}

fn main() {}
