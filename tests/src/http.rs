//! Bare HTTP/1.1 over loopback for the server tests (no client crate needed): one
//! request per connection, `Connection: close`, the status and body read back.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `METHOD path` on `base` (`http://127.0.0.1:PORT`) with an optional JSON body: the
/// status code and the body, or `None` if nothing answered.
pub fn request(base: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Polls `GET /health` until it is 200 (the model loaded and warmed up); panics after
/// `limit` with the last answer.
pub fn wait_ready(base: &str, limit: Duration) {
    let t = Instant::now();
    loop {
        let got = request(base, "GET", "/health", None);
        if matches!(got, Some((200, _))) {
            return;
        }
        assert!(
            t.elapsed() < limit,
            "{base} not ready after {limit:?}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `zoo serve --port 0` (the binary at `zoo`) with `args` and the model, and
/// returns the child and its base URL, read from the first line it prints.
pub fn start_serve(
    zoo: &str,
    args: &[&str],
    model: &std::path::Path,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut server = std::process::Command::new(zoo)
        .args(["serve", "--port", "0"])
        .args(args)
        .arg("--model")
        .arg(model)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("zoo: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (server, base)
}
