//! `cargo xtask soak [--model NAME_OR_PATH] [--requests 10000]`: a release `zoo serve`
//! (8 sequences at once) under the hostile-client script of the server tests
//! (cli/tests/hostile_e2e.py) with many more random requests, valid and not: every
//! answer's status is checked, and the resident set is recorded every 500 requests
//! (figures on stdout as one JSON line; docs/reliability.md keeps them). The test suite
//! runs the same script with 1,000 requests.

use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::bench_serve::{fetch, free_port, python, zoo_binary, Server};

pub fn soak(args: &[String]) -> Result<()> {
    let mut model = "smollm2".to_string();
    let mut requests = 10_000usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--model" => model = it.next().context("--model needs a value")?.clone(),
            "--requests" => {
                requests = it
                    .next()
                    .context("--requests needs a value")?
                    .parse()
                    .context("--requests: a number")?
            }
            other => anyhow::bail!("soak: unknown argument `{other}`"),
        }
    }
    let zoo = zoo_binary()?;
    let path = if std::path::Path::new(&model).exists() {
        model.into()
    } else {
        fetch(&zoo, &model)?
    };
    let python = python()?;
    let port = free_port()?;
    let mut c = Command::new(&zoo);
    c.args(["serve", "--port", &port.to_string(), "--parallel", "8"])
        .args(["--queue-depth", "16", "--kv-cache-mib", "16", "--model"])
        .arg(&path);
    let server = Server::start("zoo", c, port)?;
    let script = crate::root().join("cli/tests/hostile_e2e.py");
    eprintln!("xtask: {requests} requests against {}", path.display());
    let status = Command::new(&python)
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}", server.port))
        .arg(requests.to_string())
        .status()
        .context("running the hostile-client script")?;
    ensure!(status.success(), "the soak failed: {status}");
    Ok(())
}
