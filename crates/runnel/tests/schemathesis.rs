//! schemathesis (property-based, from PyPI) against the HTTP API's own OpenAPI
//! description, on a `runnel serve` with HTTP on port 0: no server errors, only
//! documented status codes and content types, schema-violating input refused.
//!
//! Bounded: deterministic generation, 25 examples per operation, a 10 s timeout per
//! request and 120 s in all. The live tail is left out (a stream never ends), and so is
//! the "schema-valid input accepted" check, because the broker validates setting values
//! and topic names beyond what a schema can say.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Broker, TempDir, repo_root};

#[test]
fn the_http_api_meets_its_openapi_description() {
    let schemathesis = repo_root().join(".venv/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: run scripts/test to install the test tools",
        schemathesis.display()
    );
    let dir = TempDir::new("schemathesis");
    let b = Broker::start(&dir.0);
    let child = Command::new(schemathesis)
        .args(["run", &format!("http://{}/api/v1/openapi.json", b.http)])
        .args(["--generation-deterministic", "-n", "25", "-w", "1"])
        .args([
            "--request-timeout",
            "10",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--exclude-path", "/api/v1/topics/{topic}/tail"])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(&dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::finish_within(child, Duration::from_secs(120), "schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}
