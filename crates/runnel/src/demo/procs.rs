//! The demo's processes: a broker and the services, each a child `runnel` process,
//! started, stopped (SIGTERM), killed (SIGKILL) and restarted by the story.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

/// How long a process may take to say it is ready.
const READY_WAIT: Duration = Duration::from_secs(60);

/// A child `runnel` process whose standard output is watched for one line.
#[derive(Debug)]
pub struct Proc {
    /// What the story calls it (`notifications`, `barista b1`).
    pub label: String,
    args: Vec<String>,
    child: Option<Child>,
    /// The address it printed once ready.
    pub addr: Option<SocketAddr>,
    log: PathBuf,
    marker: &'static str,
}

impl Proc {
    /// Starts `runnel ARGS`, logging its stderr to `log`, and waits until it prints a
    /// line containing `marker` followed by an address (`http://ADDR` or `ADDR`).
    pub fn start(
        label: &str,
        args: Vec<String>,
        log: &Path,
        marker: &'static str,
    ) -> anyhow::Result<Proc> {
        let mut p = Proc {
            label: label.to_string(),
            args,
            child: None,
            addr: None,
            log: log.to_path_buf(),
            marker,
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("finding the runnel binary")?;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut child = Command::new(exe)
            .args(&self.args)
            .env_remove("RUNNEL_BOOTSTRAP")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("starting {}", self.label))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        let marker = self.marker;
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && line.contains(marker) {
                    let _ = tx.send(line.clone());
                    sent = true;
                }
            }
        });
        let deadline = Instant::now() + READY_WAIT;
        let line = loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                break line;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready; see {}",
                    self.label,
                    self.log.display()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{} was not ready within {READY_WAIT:?}", self.label);
            }
        };
        self.addr = Some(parse_addr(&line, self.marker)?);
        self.child = Some(child);
        Ok(())
    }

    /// The address it printed.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("a started process has an address")
    }

    /// SIGKILL: no goodbye, no commit. Its group notices when its session times out.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for it to finish (drain, commit, leave), SIGKILL after `wait`.
    pub fn stop(&mut self, wait: Duration) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id();
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again with the same arguments (and the same state directory).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The address after `marker` in `line`: `http://127.0.0.1:8080` or `127.0.0.1:9092`.
fn parse_addr(line: &str, marker: &str) -> anyhow::Result<SocketAddr> {
    let rest = &line[line.find(marker).map_or(0, |i| i + marker.len())..];
    let rest = rest.trim_start();
    let rest = rest.strip_prefix("http://").unwrap_or(rest);
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    token.parse().map_err(|_| anyhow!("no address in {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::parse_addr;

    #[test]
    fn addresses_are_found_after_their_marker() {
        let a = parse_addr(
            "runnel: Kafka API listening on 127.0.0.1:40123 (advertised as 127.0.0.1:40123)",
            "listening on",
        )
        .unwrap();
        assert_eq!(a.port(), 40123);
        let b = parse_addr(
            "orders (0) ready; listening on http://127.0.0.1:5555",
            "listening on",
        )
        .unwrap();
        assert_eq!(b.port(), 5555);
        assert!(parse_addr("nothing here", "listening on").is_err());
    }
}
