//! `runnel demo` end to end: every scenario, every service a separate process, on a
//! broker of its own; it must exit 0 (every invariant held) and tell its story with
//! the essays' ideas. And `runnel example` refuses what it does not know.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn runnel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_runnel"))
}

/// Runs the demo with a deadline; returns its exit success and standard output.
fn demo(args: &[&str], deadline: Duration) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!(
        "runnel-demo-test-{}-{}",
        std::process::id(),
        args.join("-")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = runnel()
        .arg("demo")
        .args(args)
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("RUNNEL_BOOTSTRAP")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the demo did not finish within {deadline:?}; logs in {}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().unwrap();
    if status.success() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        eprintln!(
            "stdout:\n{stdout}\nstderr:\n{err}\nlogs in {}",
            dir.display()
        );
    }
    (status.success(), stdout)
}

#[test]
fn the_demo_tells_all_three_stories_and_every_invariant_holds() {
    let (ok, out) = demo(&[], Duration::from_secs(240));
    assert!(ok, "the demo failed:\n{out}");
    for idea in [
        "[event, not request]",
        "[command, event, query]",
        "[no service owns the process]",
        "[eventual consistency]",
        "[catch-up after failure]",
        "[competing consumers]",
        "[fan-out]",
        "[extensibility]",
    ] {
        assert!(out.contains(idea), "no line shows {idea}:\n{out}");
    }
    assert!(out.contains("every invariant held"), "{out}");
    assert!(!out.contains("INVARIANT BROKEN"), "{out}");
}

#[test]
fn an_unknown_service_is_a_usage_error() {
    let out = runnel().args(["example", "waiter"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no service \"waiter\""), "{err}");
    let out = runnel()
        .args(["example", "daddy", "--set", "oops"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
