//! Committed offsets survive `kill -9` of the broker: a consumer group commits through
//! confluent-kafka, the `runnel` process is killed with SIGKILL, a new one starts on the
//! same data directory, and the group resumes from exactly its commits.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `runnel serve` process on a free port.
struct Broker {
    child: Child,
    addr: String,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"])
            .args(["--group-initial-rebalance-delay-ms", "0", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("runnel starts");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string();
        Broker { child, addr }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL: no shutdown, no final sync
        self.child.wait().unwrap();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Runs a group scenario of tests/clients/python/groups.py, with a deadline.
fn scenario(addr: &str, name: &str, topic: &str) {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test to install the test clients",
        python.display()
    );
    let mut child = Command::new(python)
        .arg(repo_root().join("tests/clients/python/groups.py"))
        .args([addr, name, topic])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "{name} timed out");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{name} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn committed_offsets_survive_kill_9_of_the_broker() {
    let dir = std::env::temp_dir().join(format!("runnel-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let b = Broker::start(&dir);
    // Commits offset 5 (with metadata) on each of 4 partitions, then closes.
    scenario(&b.addr, "commit_and_close", "kill9");
    b.kill9();
    let b = Broker::start(&dir);
    // Checks the commits and their metadata, then reads exactly the rest.
    scenario(&b.addr, "resume", "kill9");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
