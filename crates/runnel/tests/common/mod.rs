//! A `runnel serve` process on a free port, for the binary's end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("runnel-bin-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

mod serve;
#[allow(unused_imports)]
pub use serve::{Broker, http_address};

impl Broker {
    /// Starts this crate's `runnel` (new groups form at once) with data in `dir`.
    pub fn start(dir: &Path) -> Broker {
        Broker::start_bin(Path::new(env!("CARGO_BIN_EXE_runnel")), dir)
    }
}

/// Waits for `child` to exit, at most `limit`; on timeout kills it and fails the test
/// with `what` and whatever it printed.
pub fn finish_within(
    mut child: std::process::Child,
    limit: std::time::Duration,
    what: &str,
) -> std::process::Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what}: not done within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `GET path` on the HTTP API; returns the status line and the body.
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    http_request(addr, "GET", path, None)
}

/// `POST path` with a JSON body on the HTTP API; returns the status line and the body.
pub fn http_post(addr: &str, path: &str, body: &str) -> (String, String) {
    http_request(addr, "POST", path, Some(body))
}

fn http_request(addr: &str, method: &str, path: &str, body: Option<&str>) -> (String, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let content = body.map_or(String::new(), |b| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        )
    });
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{content}\r\n{}",
        body.unwrap_or("")
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}
