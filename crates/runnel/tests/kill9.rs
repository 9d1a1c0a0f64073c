//! Committed offsets survive `kill -9` of the broker: a consumer group commits through
//! confluent-kafka, the `runnel` process is killed with SIGKILL, a new one starts on the
//! same data directory, and the group resumes from exactly its commits.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Broker, TempDir, repo_root};

/// Runs a group scenario of tests/clients/python/groups.py, with a deadline.
fn scenario(addr: &str, name: &str, topic: &str) {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test to install the test clients",
        python.display()
    );
    let child = Command::new(python)
        .arg(repo_root().join("tests/clients/python/groups.py"))
        .args([addr, name, topic])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::finish_within(child, Duration::from_secs(120), name);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{name} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn committed_offsets_survive_kill_9_of_the_broker() {
    let dir = TempDir::new("kill9");
    let b = Broker::start(&dir.0);
    // Commits offset 5 (with metadata) on each of 4 partitions, then closes.
    scenario(&b.addr, "commit_and_close", "kill9");
    b.kill9();
    let b = Broker::start(&dir.0);
    // Checks the commits and their metadata, then reads exactly the rest.
    scenario(&b.addr, "resume", "kill9");
    drop(b);
}
