//! Which device a model runs on: `cpu`, `cuda[:N]`, `metal[:N]` or `auto`, parsed into a
//! [`DeviceSpec`] and resolved against the back ends this build was compiled with (the
//! `cuda` and `metal` Cargo features, off by default; docs/gpu.md).

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::{Error, Result};

/// A device as asked for (`--device`, `ZOO_DEVICE`), before it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The first GPU that this build can drive and that answers, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// An NVIDIA GPU by ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
    /// An Apple GPU by ordinal (`metal` is `metal:0`).
    Metal(usize),
}

/// What `--device` accepts, for error messages and help text.
pub const DEVICE_SYNTAX: &str = "cpu, cuda, cuda:N, metal, metal:N or auto";

/// The build command that adds a back end (the CLI; a library user adds the same
/// feature to the `zoo` dependency).
fn build_hint(feature: &str) -> String {
    format!("cargo build --release -p zoo-cli --features {feature}")
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        let (kind, number) = match t.split_once(':') {
            Some((k, n)) => (k, Some(n)),
            None => (t.as_str(), None),
        };
        let ordinal = |n: Option<&str>| -> Result<usize> {
            n.map_or(Ok(0), |n| {
                n.parse().map_err(|_| Error::InvalidDevice {
                    found: s.to_string(),
                    expected: DEVICE_SYNTAX,
                })
            })
        };
        match (kind, number) {
            ("auto", None) => Ok(Self::Auto),
            ("cpu", None) => Ok(Self::Cpu),
            ("cuda", n) => Ok(Self::Cuda(ordinal(n)?)),
            ("metal", n) => Ok(Self::Metal(ordinal(n)?)),
            _ => Err(Error::InvalidDevice {
                found: s.to_string(),
                expected: DEVICE_SYNTAX,
            }),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

/// The GPU back ends compiled into this build, by feature name.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "metal") {
        v.push("metal");
    }
    v
}

impl DeviceSpec {
    /// The spec in `ZOO_DEVICE`, [`DeviceSpec::Auto`] when it is unset or empty.
    pub fn from_env() -> Result<Self> {
        match std::env::var("ZOO_DEVICE") {
            Ok(s) if !s.trim().is_empty() => s.parse(),
            _ => Ok(Self::Auto),
        }
    }

    /// Opens the device. A back end this build lacks is [`Error::DeviceNotCompiled`]
    /// (with the build command that adds it); one compiled in whose device does not
    /// answer (no GPU, no driver, an ordinal past the last GPU) is
    /// [`Error::DeviceUnavailable`]. `auto` never fails: the first GPU that answers,
    /// else the CPU.
    pub fn resolve(&self) -> Result<Device> {
        match *self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => open(*self, "cuda", cfg!(feature = "cuda"), || {
                Device::new_cuda(n)
            }),
            Self::Metal(n) => open(*self, "metal", cfg!(feature = "metal"), || {
                Device::new_metal(n)
            }),
            Self::Auto => {
                for (spec, compiled) in [
                    (Self::Cuda(0), cfg!(feature = "cuda")),
                    (Self::Metal(0), cfg!(feature = "metal")),
                ] {
                    if !compiled {
                        continue;
                    }
                    match spec.resolve() {
                        Ok(d) => return Ok(d),
                        Err(e) => tracing::info!(device = %spec, "auto: {e}; trying the next"),
                    }
                }
                Ok(Device::Cpu)
            }
        }
    }
}

fn open(
    spec: DeviceSpec,
    feature: &'static str,
    compiled: bool,
    new: impl FnOnce() -> candle_core::Result<Device>,
) -> Result<Device> {
    if !compiled {
        return Err(Error::DeviceNotCompiled {
            device: spec.to_string(),
            feature,
            build: build_hint(feature),
        });
    }
    new().map_err(|e| Error::DeviceUnavailable {
        device: spec.to_string(),
        detail: e.to_string(),
    })
}

/// How a device is named in logs and `zoo inspect`: `cpu`, `cuda:0`, `metal:0`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_round_trips() {
        for (s, want) in [
            ("auto", DeviceSpec::Auto),
            ("cpu", DeviceSpec::Cpu),
            ("CPU", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(0)),
            ("cuda:1", DeviceSpec::Cuda(1)),
            ("metal", DeviceSpec::Metal(0)),
            ("metal:2", DeviceSpec::Metal(2)),
        ] {
            let got: DeviceSpec = s.parse().unwrap();
            assert_eq!(got, want, "{s}");
            assert_eq!(got.to_string().parse::<DeviceSpec>().unwrap(), want);
        }
    }

    #[test]
    fn rejects_what_is_no_device() {
        for s in ["", "tpu", "cuda:x", "cpu:0", "cuda:-1", "auto:1"] {
            let e = s.parse::<DeviceSpec>().unwrap_err();
            assert!(matches!(e, Error::InvalidDevice { .. }), "{s}: {e}");
            assert!(e.to_string().contains("cuda:N"), "{e}");
        }
    }

    #[test]
    fn cpu_always_resolves() {
        assert!(DeviceSpec::Cpu.resolve().unwrap().is_cpu());
        assert_eq!(device_name(&Device::Cpu), "cpu");
    }

    /// A build without the `cuda` feature names the feature and the build command.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_on_a_cpu_build_is_a_typed_error() {
        let e = DeviceSpec::Cuda(0).resolve().unwrap_err();
        match &e {
            Error::DeviceNotCompiled { feature, build, .. } => {
                assert_eq!(*feature, "cuda");
                assert!(build.contains("--features cuda"), "{build}");
            }
            other => panic!("expected DeviceNotCompiled, got {other:?}"),
        }
        assert!(e.to_string().contains("--features cuda"), "{e}");
        assert!(!compiled_backends().contains(&"cuda"));
    }

    #[cfg(not(feature = "metal"))]
    #[test]
    fn metal_on_a_cpu_build_is_a_typed_error() {
        let e = DeviceSpec::Metal(0).resolve().unwrap_err();
        assert!(
            matches!(
                e,
                Error::DeviceNotCompiled {
                    feature: "metal",
                    ..
                }
            ),
            "{e}"
        );
    }

    /// With no GPU back end compiled in, `auto` is the CPU.
    #[cfg(not(any(feature = "cuda", feature = "metal")))]
    #[test]
    fn auto_is_cpu_on_a_cpu_build() {
        assert!(DeviceSpec::Auto.resolve().unwrap().is_cpu());
    }
}
