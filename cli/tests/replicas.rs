//! Two `zoo serve` replicas behind the real Caddy with deploy/Caddyfile, driven by the
//! official `openai` client (cli/tests/replicas_e2e.py): sessions stick to a replica;
//! 32 concurrent streams while one replica is killed with SIGKILL, whose streams fail
//! visibly while the others finish; every request after the kill succeeds; the
//! restarted replica rejoins and takes traffic.

use std::process::Command;

#[test]
fn replicas_behind_caddy_survive_a_kill() {
    let model = zoo_tests::real_model("smollm2").unwrap();
    let python = zoo_tests::openai_python().unwrap();
    let caddy = zoo_tests::tools::caddy().unwrap();
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(&python)
        .arg(format!("{dir}/tests/replicas_e2e.py"))
        .arg(env!("CARGO_BIN_EXE_zoo"))
        .arg(&caddy)
        .arg(&model)
        .arg(format!("{dir}/../deploy/Caddyfile"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replica checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("replicas: {stdout}");
    let figures: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(figures["after_kill_failed"], 0);
    assert!(figures["failed_during_kill"].as_u64().unwrap() >= 1);
}
