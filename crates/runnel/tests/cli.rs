//! The `runnel` binary: flags, configuration errors, the startup line, and a graceful
//! shutdown on SIGTERM that leaves a clean log behind.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn runnel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_runnel"))
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("runnel-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn serve_help_documents_every_flag_and_its_environment_variable() {
    let out = runnel().args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, env) in [
        ("--listen", "RUNNEL_LISTEN"),
        ("--advertise", "RUNNEL_ADVERTISE"),
        ("--data-dir", "RUNNEL_DATA_DIR"),
        ("--http", "RUNNEL_HTTP"),
        ("--partitions", "RUNNEL_PARTITIONS"),
        ("--durability", "RUNNEL_DURABILITY"),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag} / {env} missing from:\n{help}"
        );
    }
}

#[test]
fn bad_settings_exit_with_code_2_and_say_what_is_wrong() {
    for (args, needle) in [
        (vec!["serve", "--durability", "sometimes"], "durability"),
        (vec!["serve", "--listen", "nowhere"], "IP:PORT"),
        (vec!["serve", "--partitions", "0"], "partitions"),
    ] {
        let out = runnel().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = runnel()
        .env("RUNNEL_CONNECTIONS_MAX", "many")
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connections-max"));
}

#[test]
fn serve_prints_where_it_listens_and_stops_cleanly_on_sigterm() {
    let dir = temp_dir("serve");
    let mut child = runnel()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--data-dir",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("listening on 127.0.0.1:"), "{first}");
    assert!(first.contains(&dir.display().to_string()), "{first}");
    // The HTTP API is up too, on the port it printed.
    let second = lines.next().unwrap().unwrap();
    let http = common::http_address(&second);
    let mut conn = std::net::TcpStream::connect(&http).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(
        &mut conn,
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut conn, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#"{"status":"live"}"#), "{answer}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "runnel did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("stopped cleanly")),
        "{rest:?}"
    );
    assert!(
        dir.join("clean-shutdown").exists(),
        "the clean-shutdown marker is written"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
