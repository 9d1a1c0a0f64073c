//! An in-process broker for fuzzing `Broker::handle_frame`, and the oracle that judges
//! what it answered.
//!
//! Shared by the cargo-fuzz target (`fuzz_targets/request.rs`) and by the bounded
//! in-test run in `crates/runnel-broker/tests/fuzz_smoke.rs`, which includes this file
//! with `#[path]`: so the harness is compiled and exercised by every `cargo test`, even
//! where no nightly toolchain is installed to run the fuzzer itself.
//!
//! Design choices:
//! - A current-thread runtime with **paused time**: a fuzzed Fetch may ask to wait up to
//!   a minute, and paused time lets tokio jump straight to the deadline once nothing else
//!   can run (blocking storage work holds the clock until it finishes). The long-poll
//!   path is still exercised; no input costs wall-clock time for waiting.
//! - The shutdown signal's sender is kept alive and never fired, as in a running server:
//!   a fired signal would make every long poll answer at once and hide that path.
//! - The log never fsyncs and runs no background thread: durability is not what is
//!   fuzzed here, speed and determinism are.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, ProduceRequest, RequestHeader, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::Decodable;
use runnel_broker::request_prefix;
use runnel_broker::{Broker, BrokerConfig, Outcome};
use runnel_log::{Durability, Log, LogConfig};
use tokio::sync::watch;

/// UNSUPPORTED_VERSION: the ApiVersions fallback answers with it in a v0 body.
const UNSUPPORTED_VERSION: i16 = 35;

/// A broker over a log in a fresh temporary directory, driven one frame at a time.
pub struct Harness {
    // Field order is drop order: the runtime and the broker (which holds the log) go
    // before the directory they use is removed.
    rt: tokio::runtime::Runtime,
    broker: Broker,
    _shutdown: watch::Sender<bool>,
    _dir: ScratchDir,
}

impl Harness {
    /// A broker with auto-creation on and one default partition, over an empty log in a
    /// new directory under the system temp dir whose name contains `tag`.
    pub fn new(tag: &str) -> std::io::Result<Harness> {
        let dir = ScratchDir::new(tag)?;
        let mut log_config = LogConfig::new(&dir.0);
        log_config.topic_defaults.durability = Durability::Never;
        log_config.background = false;
        let log = Arc::new(Log::open(log_config).map_err(std::io::Error::other)?);
        let config = BrokerConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            data_dir: dir.0.clone(),
            durability: Durability::Never,
            ..BrokerConfig::default()
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let broker = Broker::new(log, config, 9092, shutdown_rx)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()?;
        Ok(Harness {
            rt,
            broker,
            _shutdown: shutdown,
            _dir: dir,
        })
    }

    /// Serves one request frame body (the bytes after the size prefix).
    pub fn handle(&self, frame: &[u8]) -> Outcome {
        self.rt
            .block_on(self.broker.handle_frame(BytesMut::from(frame)))
    }

    /// The broker, for direct access to its log and identity.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }
}

/// A directory removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(tag: &str) -> std::io::Result<ScratchDir> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "runnel-fuzz-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Judges the broker's answer to `request` (a frame body). `Err` says what is wrong.
///
/// - `Close` must carry a reason (it is logged for the operator).
/// - `Silent` is allowed only for a Produce that decodes with `acks = 0`.
/// - `Respond` must be a whole frame: its size prefix matches its length, its header
///   echoes the request's correlation id, and its body decodes completely as the response
///   of the request's API and version. ApiVersions may instead answer with the KIP-511
///   fallback: a v0 body with UNSUPPORTED_VERSION and a non-empty API list.
pub fn check_outcome(request: &[u8], outcome: &Outcome) -> Result<(), String> {
    match outcome {
        Outcome::Close(reason) if reason.is_empty() => Err("Close without a reason".into()),
        Outcome::Close(_) => Ok(()),
        Outcome::Silent => check_silent(request),
        Outcome::Respond(frame) => check_response(request, frame),
    }
}

fn check_silent(request: &[u8]) -> Result<(), String> {
    let prefix = request_prefix(request).ok_or("Silent for a frame without a prefix")?;
    if prefix.api_key != ApiKey::Produce as i16 {
        return Err(format!("Silent for api key {}", prefix.api_key));
    }
    let mut buf = Bytes::copy_from_slice(request);
    let header_version = ApiKey::Produce.request_header_version(prefix.api_version);
    RequestHeader::decode(&mut buf, header_version)
        .map_err(|e| format!("Silent for a Produce whose header does not decode: {e:#}"))?;
    let produce = ProduceRequest::decode(&mut buf, prefix.api_version)
        .map_err(|e| format!("Silent for a Produce that does not decode: {e:#}"))?;
    if produce.acks != 0 {
        return Err(format!("Silent for a Produce with acks={}", produce.acks));
    }
    Ok(())
}

fn check_response(request: &[u8], frame: &[u8]) -> Result<(), String> {
    let size = frame
        .get(..4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or("response shorter than its size prefix")?;
    if usize::try_from(size).ok() != Some(frame.len() - 4) {
        return Err(format!(
            "size prefix {size} but {} bytes follow it",
            frame.len() - 4
        ));
    }
    let prefix = request_prefix(request).ok_or("a response to a frame without a prefix")?;
    let key = ApiKey::try_from(prefix.api_key)
        .map_err(|()| format!("a response to unknown api key {}", prefix.api_key))?;
    let mut buf = Bytes::copy_from_slice(&frame[4..]);
    let header = ResponseHeader::decode(&mut buf, key.response_header_version(prefix.api_version))
        .map_err(|e| format!("response header does not decode: {e:#}"))?;
    if header.correlation_id != prefix.correlation_id {
        return Err(format!(
            "correlation id {} answered with {}",
            prefix.correlation_id, header.correlation_id
        ));
    }
    if key == ApiKey::ApiVersions && buf.len() >= 2 && buf[..2] == UNSUPPORTED_VERSION.to_be_bytes()
    {
        return check_api_versions_fallback(buf);
    }
    ResponseKind::decode(key, &mut buf, prefix.api_version).map_err(|e| {
        format!(
            "{key:?} v{} response body does not decode: {e:#}",
            prefix.api_version
        )
    })?;
    if buf.has_remaining() {
        return Err(format!(
            "{} bytes after the {key:?} response body",
            buf.remaining()
        ));
    }
    Ok(())
}

fn check_api_versions_fallback(mut buf: Bytes) -> Result<(), String> {
    let body = ApiVersionsResponse::decode(&mut buf, 0)
        .map_err(|e| format!("ApiVersions fallback is not a v0 body: {e:#}"))?;
    if buf.has_remaining() {
        return Err(format!(
            "{} bytes after the ApiVersions fallback",
            buf.remaining()
        ));
    }
    if !body
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::ApiVersions as i16)
    {
        return Err("ApiVersions fallback without the ApiVersions entry".into());
    }
    Ok(())
}
