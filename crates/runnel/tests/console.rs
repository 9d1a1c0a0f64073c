//! The web console in a real browser: tests/clients/browser/console.js drives Debian's
//! chromium with playwright-core against a `runnel serve` on port 0, with records
//! produced and groups formed by kcat. It loads every route (no console errors, no
//! failed requests), creates and deletes a topic through the UI, checks that record
//! data is shown as text (no markup from a value runs or becomes an element), checks a
//! group's members and lag against the JSON API, and saves screenshots (1280 px, and
//! the topics page at 390 px) to target/console-screenshots/.
//!
//! Bounded: 120 s for the whole browser run, each step with its own deadline.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Broker, TempDir, repo_root};

/// A tool the test command installs; a clear failure (never a silent skip) when absent.
fn tool(path: &Path) {
    assert!(
        path.exists(),
        "{} is missing: run scripts/test (or scripts/install-test-tools) to install the test tools",
        path.display()
    );
}

#[test]
fn the_console_works_in_a_real_browser() {
    let root = repo_root();
    let browser = root.join("tests/clients/browser");
    tool(Path::new("/usr/bin/chromium"));
    tool(Path::new("/usr/bin/kcat"));
    tool(&root.join(".venv/bin/python"));
    tool(&browser.join("node_modules/playwright-core/package.json"));

    let shots = root.join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();

    let dir = TempDir::new("console");
    let b = Broker::start(&dir.0);
    let child = Command::new("node")
        .arg("console.js")
        .args([&b.http, &b.addr])
        .arg(&shots)
        // A service built with the toolkit, for the Services page.
        .arg(env!("CARGO_BIN_EXE_runnel"))
        .arg(dir.0.join("example"))
        .current_dir(&browser)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts (run scripts/install-test-tools)");
    let out = common::finish_within(
        child,
        Duration::from_secs(120),
        "the console's browser tests",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.lines().next_back() == Some("ok"),
        "the console's browser tests failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for page in [
        "overview",
        "topology",
        "topics",
        "topic",
        "messages",
        "groups",
        "group",
        "topics-phone",
    ] {
        let png = shots.join(format!("{page}.png"));
        assert!(png.exists(), "no screenshot {}\n{stderr}", png.display());
    }
}
