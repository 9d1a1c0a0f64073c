//! `runnel serve` as a child process on free ports: shared by the binary's end-to-end
//! tests (`mod.rs`) and the services bench (`runnel-services/benches/services.rs`,
//! included with `#[path]`), which runs the release binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `runnel serve` on 127.0.0.1:0 with data in a given directory; killed when dropped.
pub struct Broker {
    child: Child,
    /// The Kafka address it printed.
    pub addr: String,
    /// The HTTP API's address it printed.
    pub http: String,
}

impl Broker {
    /// Starts the broker `bin` (new groups form at once) and reads the addresses it
    /// listens on.
    pub fn start_bin(bin: &Path, dir: &Path) -> Broker {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(["--log-level", "warn"])
            .args(["--group-initial-rebalance-delay-ms", "0", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut first, mut second) = (String::new(), String::new());
        out.read_line(&mut first).unwrap();
        out.read_line(&mut second).unwrap();
        let http = http_address(&second);
        let addr = first
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string();
        Broker { child, addr, http }
    }

    /// SIGKILL: no shutdown, no final sync.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HTTP API's address in the startup line that announces it.
pub fn http_address(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no HTTP address in {line:?}"))
        .to_string()
}
