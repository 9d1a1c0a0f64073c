//! Faults from the machine (issue 11), on the real `runnel` binary:
//!
//! - a failed fsync, injected with libfiu (`fiu-run -x`, then `fiu-ctrl` at run time):
//!   it is never acknowledged, the partition refuses writes and the log says why, reads,
//!   metadata and ApiVersions keep answering, and a restart without the fault serves
//!   every acknowledged record in order;
//! - a full disk, a size-limited tmpfs of the test's own: Produce is refused with
//!   KAFKA_STORAGE_ERROR and the refused batch is taken back, reads and a commit that
//!   fits in the pages the log already holds keep working, and once space is freed the
//!   same process accepts writes again, with nothing corrupt on disk.
//!
//! libfiu comes from the Debian package `fiu-utils` (scripts/test installs it); mounting
//! the tmpfs needs root, as scripts/test runs in CI. Without either the tests fail and say
//! so: a fault test that skips itself proves nothing.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

/// Every wait on the broker or a client ends by then.
const WAIT: Duration = Duration::from_secs(30);
/// What the partition logs when it starts refusing writes (runnel-log `poison_with`).
const POISONED_LOG: &str = "partition refuses writes from now on";
/// What the partition logs when a write failed and was taken back.
const WRITE_FAILED_LOG: &str = "append failed; nothing was written";
/// What the log's background thread logs when a recovery-point checkpoint fails.
const CHECKPOINT_FAILED_LOG: &str = "could not write the recovery point";
/// What recovery logs when it finds damage; a fault must never leave any.
const RECOVERY_DAMAGE_LOGS: [&str; 3] = [
    "cutting the log",
    "quarantined",
    "acknowledged offsets are missing",
];

/// A `runnel serve` process with its log in a file; killed when dropped.
struct Served {
    child: Child,
    /// The Kafka address it printed.
    addr: String,
    /// Its standard error: the log, at `warn`.
    log: PathBuf,
}

impl Served {
    /// Starts `runnel serve` on 127.0.0.1:0 (topics auto-created with two partitions),
    /// under `wrapper` (a command and its arguments) if one is given.
    fn start(data: &Path, log: &Path, wrapper: &[&std::ffi::OsStr]) -> Served {
        let runnel = Path::new(env!("CARGO_BIN_EXE_runnel"));
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(runnel);
                c
            }
            None => Command::new(runnel),
        };
        let stderr = std::fs::File::create(log).expect("log file");
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(["--log-level", "warn", "--partitions", "2", "--data-dir"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("runnel starts");
        // A thread reads standard output to its end, so a line printed late never
        // meets a closed pipe; the first line names the Kafka address.
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut served = Served {
            child,
            addr: String::new(),
            log: log.to_path_buf(),
        };
        let first = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("runnel did not start:\n{}", served.log_text()));
        served.addr = first
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string();
        served
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; fails with the log after the deadline.
    fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.log_text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the broker never logged {needle:?}; its log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails if the process has exited (a fault must not take the broker down).
    fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "the broker exited ({status}); its log:\n{}",
                self.log_text()
            );
        }
    }

    /// SIGTERM, then waits for the process to end (at most [`WAIT`]).
    fn terminate(mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the broker did not stop within {WAIT:?} of SIGTERM; its log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown, no final sync.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A program of libfiu's `fiu-utils`, or a failure that says how to get it.
fn fiu_tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: the fsync fault test needs libfiu's tools, the \
                 Debian package fiu-utils, which scripts/test installs \
                 (`apt-get install fiu-utils`)"
            )
        })
}

/// Sends one remote-control command to a process started by `fiu-run -f prefix`.
fn fiu_ctrl(prefix: &Path, pid: u32, command: &str) {
    let child = Command::new(fiu_tool("fiu-ctrl"))
        .arg("-f")
        .arg(prefix)
        .args(["-c", command, &pid.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::finish_within(child, WAIT, &format!("fiu-ctrl {command:?}"));
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // fiu-ctrl exits 0 even when the command failed; it says so on standard output.
    assert!(
        out.status.success() && !said.contains("Error") && !said.contains("error"),
        "fiu-ctrl {command:?} failed: {}\n{said}",
        out.status
    );
}

/// A producer that reports the first error it gets: no retries, so a refused batch is
/// refused now rather than resent until its delivery timeout.
struct Producer {
    inner: FutureProducer,
    rt: tokio::runtime::Runtime,
}

impl Producer {
    fn new(addr: &str) -> Producer {
        let inner = ClientConfig::new()
            .set("bootstrap.servers", addr)
            .set("linger.ms", "0")
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("message.send.max.retries", "0")
            .set("message.timeout.ms", "20000")
            .set("request.timeout.ms", "15000")
            .create()
            .expect("producer");
        Producer {
            inner,
            rt: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    /// Produces one record and waits for its answer (bounded by `message.timeout.ms`):
    /// the offset it was acknowledged at, or the error.
    fn send(&self, topic: &str, partition: i32, value: &[u8]) -> Result<i64, KafkaError> {
        let record = FutureRecord::<(), _>::to(topic)
            .partition(partition)
            .payload(value);
        let sent = self
            .rt
            .block_on(self.inner.send(record, Timeout::After(WAIT)));
        match sent {
            Ok(delivery) => {
                assert_eq!(delivery.partition, partition);
                Ok(delivery.offset)
            }
            Err((e, _)) => Err(e),
        }
    }
}

/// Fails unless `result` is a refusal with KAFKA_STORAGE_ERROR.
fn assert_storage_error(result: Result<i64, KafkaError>, what: &str) {
    match result {
        Ok(offset) => panic!("{what}: acknowledged at offset {offset}"),
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::KafkaStorageError)) => {}
        Err(e) => panic!("{what}: refused, but with {e} rather than KAFKA_STORAGE_ERROR"),
    }
}

fn consumer(addr: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer")
}

/// Every record of one partition below its high watermark, as (offset, value).
fn read_all(addr: &str, topic: &str, partition: i32) -> Vec<(i64, Vec<u8>)> {
    let c = consumer(addr, "faults-reader");
    let (_, high) = c
        .fetch_watermarks(topic, partition, WAIT)
        .expect("ListOffsets answers");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut got: Vec<(i64, Vec<u8>)> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.last().map_or(0, |(o, _)| o + 1) < high {
        assert!(
            Instant::now() < deadline,
            "{topic}/{partition}: read {} records, the last at {:?}, not up to the high \
             watermark {high}",
            got.len(),
            got.last().map(|(o, _)| o)
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => got.push((m.offset(), m.payload().unwrap_or_default().to_vec())),
            Some(Err(e)) => panic!("{topic}/{partition}: read failed: {e}"),
            None => {}
        }
    }
    got
}

/// Every acknowledged record is there with its value, in order; offsets are unique.
fn assert_acknowledged_present(read: &[(i64, Vec<u8>)], acked: &[(i64, Vec<u8>)], what: &str) {
    assert!(
        read.windows(2).all(|w| w[0].0 < w[1].0),
        "{what}: offsets read are not strictly increasing"
    );
    assert!(
        acked.windows(2).all(|w| w[0].0 < w[1].0),
        "{what}: acknowledged offsets are not strictly increasing"
    );
    for (offset, value) in acked {
        let found = read
            .binary_search_by_key(offset, |(o, _)| *o)
            .map(|i| &read[i].1);
        assert_eq!(
            found.ok(),
            Some(value),
            "{what}: the record acknowledged at offset {offset} is missing or changed"
        );
    }
}

/// Sends ApiVersions v0 on a fresh connection; returns its error code.
fn api_versions_error_code(addr: &str) -> i16 {
    let mut conn = std::net::TcpStream::connect(addr).expect("connects");
    conn.set_read_timeout(Some(WAIT)).unwrap();
    // Length, api key 18, version 0, correlation id 7, null client id.
    let mut frame = 10i32.to_be_bytes().to_vec();
    frame.extend_from_slice(&18i16.to_be_bytes());
    frame.extend_from_slice(&0i16.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    conn.write_all(&frame).unwrap();
    let mut size = [0u8; 4];
    conn.read_exact(&mut size).expect("ApiVersions answers");
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    conn.read_exact(&mut body).unwrap();
    assert_eq!(&body[..4], &7i32.to_be_bytes(), "correlation id");
    i16::from_be_bytes([body[4], body[5]])
}

/// Metadata answers for `topic` with its two partitions, and ApiVersions answers.
fn assert_broker_answers(addr: &str, topic: &str) {
    let md = consumer(addr, "faults-reader")
        .fetch_metadata(Some(topic), WAIT)
        .expect("Metadata answers");
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .expect("topic in metadata");
    assert_eq!(t.error(), None, "metadata error for {topic}");
    assert_eq!(t.partitions().len(), 2);
    assert_eq!(api_versions_error_code(addr), 0, "ApiVersions error code");
}

fn value(tag: &str, i: usize, bytes: usize) -> Vec<u8> {
    let mut v = format!("{tag}-{i}-").into_bytes();
    v.resize(bytes.max(v.len()), b'.');
    v
}

/// The fault is libfiu's `posix/io/sync/fdatasync` failing with EIO (failinfo 5), which
/// is what `File::sync_data` calls. It fails every fdatasync in the process, so both
/// partitions refuse writes; what must hold is that nothing is acknowledged, nothing
/// crashes, and everything acknowledged before survives a restart.
#[test]
fn a_failed_fsync_is_never_acknowledged_and_a_restart_recovers() {
    const TOPIC: &str = "faults-fsync";
    const BEFORE: usize = 20;
    let fiu_run = fiu_tool("fiu-run");
    fiu_tool("fiu-ctrl");
    let dir = TempDir::new("faults-fsync");
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // fiu-run's control fifos are `<prefix>-<pid>.{in,out}`; keep them in our directory.
    let prefix = dir.0.join("fiu-ctrl");
    let mut b = Served::start(
        &data,
        &dir.0.join("faulty.log"),
        &[
            fiu_run.as_os_str(),
            "-x".as_ref(),
            "-f".as_ref(),
            prefix.as_os_str(),
        ],
    );
    let p = Producer::new(&b.addr);
    let mut acked: [Vec<(i64, Vec<u8>)>; 2] = Default::default();
    for i in 0..BEFORE {
        for (part, acks) in acked.iter_mut().enumerate() {
            let v = value(&format!("p{part}-before"), i, 100);
            let offset = p
                .send(TOPIC, part as i32, &v)
                .unwrap_or_else(|e| panic!("produce before the fault: {e}"));
            acks.push((offset, v));
        }
    }

    fiu_ctrl(
        &prefix,
        b.pid(),
        "enable name=posix/io/sync/fdatasync,failnum=1,failinfo=5",
    );
    for i in 0..5 {
        let v = value("p0-during", i, 100);
        assert_storage_error(p.send(TOPIC, 0, &v), "produce to p0 while fsync fails");
    }
    // Every fdatasync fails, so the other partition's first fsync fails too.
    assert_storage_error(
        p.send(TOPIC, 1, b"p1-during"),
        "produce to p1 while fsync fails",
    );
    let log = b.wait_for_log(POISONED_LOG);
    assert!(
        log.contains("sync") && log.contains(TOPIC),
        "the log says which partition and why:\n{log}"
    );

    // Reads, metadata and ApiVersions still answer; reads end where the acknowledged
    // records end (the high watermark moves only after an fsync).
    b.assert_alive();
    for (part, acks) in acked.iter().enumerate() {
        assert_eq!(
            &read_all(&b.addr, TOPIC, part as i32),
            acks,
            "p{part} while poisoned"
        );
    }
    assert_broker_answers(&b.addr, TOPIC);
    // Still refused after the partition was poisoned: a later fsync could succeed on
    // pages the kernel already dropped, so the partition must not try again.
    assert_storage_error(p.send(TOPIC, 0, b"p0-later"), "produce to a poisoned p0");

    // With fsync working again the poisoned partition still refuses (until a restart),
    // while a new topic takes writes: the process as a whole is fine.
    fiu_ctrl(&prefix, b.pid(), "disable name=posix/io/sync/fdatasync");
    assert_storage_error(
        p.send(TOPIC, 0, b"p0-fault-gone"),
        "produce to a poisoned p0 once fsync works again",
    );
    let other = p
        .send("faults-fsync-other", 0, b"other")
        .unwrap_or_else(|e| panic!("produce to a new topic once fsync works again: {e}"));
    assert_eq!(
        read_all(&b.addr, "faults-fsync-other", 0),
        [(other, b"other".to_vec())]
    );
    b.assert_alive();

    // A clean shutdown cannot sync the poisoned partition: it must end, and must not
    // mark the data clean (that would skip the recovery scan on the next start).
    b.terminate();
    assert!(
        !data.join("clean-shutdown").exists(),
        "a shutdown that could not sync every partition marked the log clean"
    );

    // A restart without the fault recovers what is on disk and takes writes again.
    let b = Served::start(&data, &dir.0.join("restarted.log"), &[]);
    for (part, acks) in acked.iter().enumerate() {
        let read = read_all(&b.addr, TOPIC, part as i32);
        assert_acknowledged_present(&read, acks, &format!("p{part} after restart"));
    }
    let p = Producer::new(&b.addr);
    let v = b"p0-after-restart".to_vec();
    let offset = p
        .send(TOPIC, 0, &v)
        .unwrap_or_else(|e| panic!("produce after restart: {e}"));
    assert!(offset > acked[0].last().unwrap().0);
    acked[0].push((offset, v));
    let read = read_all(&b.addr, TOPIC, 0);
    assert_acknowledged_present(&read, &acked[0], "p0 after a produce after restart");
    let log = b.log_text();
    for damage in RECOVERY_DAMAGE_LOGS {
        assert!(!log.contains(damage), "recovery found damage:\n{log}");
    }
}

/// A tmpfs mounted for one test; unmounted (and its mount point removed) when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "the disk-full test mounts a tmpfs of its own and needs root for it (CI runs \
             scripts/test as root): mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.0).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            // Still busy (a child not yet reaped): detach it now, it goes when free.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Writes `path` until the filesystem is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => panic!("write returned 0 before the disk was full"),
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => return written,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
}

/// Creates `topic` (two partitions) with one config override, with `runnel topic create`.
fn create_topic(addr: &str, topic: &str, config: &str) {
    let child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args([
            "topic",
            "create",
            topic,
            "--partitions",
            "2",
            "--config",
            config,
        ])
        .args(["--bootstrap", addr])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::finish_within(child, WAIT, "runnel topic create");
    assert!(
        out.status.success(),
        "runnel topic create {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Commits `offset` with `metadata` for both partitions of `topic` in one request (one
/// batch in `__consumer_offsets`), outside any generation.
fn commit(
    addr: &str,
    group: &str,
    topic: &str,
    offset: i64,
    metadata: &str,
) -> Result<(), KafkaError> {
    let c = consumer(addr, group);
    let mut tpl = TopicPartitionList::new();
    for partition in 0..2 {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .unwrap();
        tpl.find_partition(topic, partition)
            .unwrap()
            .set_metadata(metadata);
    }
    c.commit(&tpl, CommitMode::Sync)
}

fn committed(addr: &str, group: &str, topic: &str) -> Offset {
    let c = consumer(addr, group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c.committed_offsets(tpl, WAIT).expect("OffsetFetch answers");
    got.find_partition(topic, 0).expect("partition").offset()
}

/// ENOSPC on a write takes the batch back and refuses it without poisoning the
/// partition, so once space is free the same process takes writes again (no restart).
/// tmpfs charges whole pages, and that makes the outcomes deterministic: a small
/// commit lands in the page `__consumer_offsets`' segment already holds, while a 32 KiB
/// record needs eight pages the full disk does not have (the broker's checkpoint files
/// can give back a page or two while the disk fills, never eight).
#[test]
fn a_full_disk_refuses_produce_keeps_reads_and_commits_and_recovers_when_space_is_freed() {
    const TOPIC: &str = "faults-full";
    const GROUP: &str = "faults-full-group";
    const ROLLING: &str = "faults-full-rolling";
    let dir = TempDir::new("faults-full");
    let disk = SmallDisk::mount(&dir.0.join("disk"), "8m");
    let data = disk.0.join("data");
    let filler = disk.0.join("filler");
    let top_up = disk.0.join("filler-top-up");
    let mut b = Served::start(&data, &dir.0.join("full.log"), &[]);
    let p = Producer::new(&b.addr);
    let mut acked: [Vec<(i64, Vec<u8>)>; 2] = Default::default();
    for i in 0..20 {
        let v = value("p0-before", i, 1000);
        let offset = p
            .send(TOPIC, 0, &v)
            .unwrap_or_else(|e| panic!("produce before the disk is full: {e}"));
        acked[0].push((offset, v));
    }
    commit(&b.addr, GROUP, TOPIC, 5, "").expect("commit before the disk is full");
    // A topic whose segments are small, so that the disk fills up in the middle of a roll.
    create_topic(&b.addr, ROLLING, "segment.bytes=16384");
    let mut rolling = Vec::new();
    for i in 0..20 {
        let v = value("rolling-before", i, 1000);
        let offset = p
            .send(ROLLING, 0, &v)
            .unwrap_or_else(|e| panic!("produce before the disk is full: {e}"));
        rolling.push((offset, v));
    }

    assert!(fill(&filler) > 0);
    let filled = Instant::now();
    for i in 0..3 {
        let v = value("p0-full", i, 32 << 10);
        assert_storage_error(p.send(TOPIC, 0, &v), "a 32 KiB produce on a full disk");
        let v = value("rolling-full", i, 32 << 10);
        assert_storage_error(
            p.send(ROLLING, 0, &v),
            "a 32 KiB produce that rolls a segment on a full disk",
        );
    }
    assert_storage_error(
        p.send(TOPIC, 1, &value("p1-full", 0, 32 << 10)),
        "a 32 KiB produce to p1 on a full disk",
    );
    b.wait_for_log(WRITE_FAILED_LOG);
    b.assert_alive();

    // Reads serve exactly what was acknowledged: the refused batches were taken back.
    assert_eq!(read_all(&b.addr, TOPIC, 0), acked[0], "p0 on a full disk");
    assert_eq!(
        read_all(&b.addr, ROLLING, 0),
        rolling,
        "rolling on a full disk"
    );
    assert!(read_all(&b.addr, TOPIC, 1).is_empty());
    assert_broker_answers(&b.addr, TOPIC);
    commit(&b.addr, GROUP, TOPIC, 10, "").expect("a commit that fits on a full disk");
    assert_eq!(committed(&b.addr, GROUP, TOPIC), Offset::Offset(10));
    // A commit with 4000 bytes of metadata per partition needs pages the disk does not
    // have: it is refused, and the committed offset stays what the log holds. (Filled
    // again first: the broker's recovery-point checkpoints replace a file, and one that
    // was halfway when the disk filled up may have given a page back since.)
    fill(&top_up);
    let metadata = "m".repeat(4000);
    let refused = commit(&b.addr, GROUP, TOPIC, 11, &metadata);
    // As Kafka's coordinator answers a commit it could not store: NOT_COORDINATOR,
    // which clients retry after looking the coordinator up again.
    assert!(
        matches!(
            refused,
            Err(KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NotCoordinator
            ))
        ),
        "a commit that does not fit: {refused:?}"
    );
    assert_eq!(committed(&b.addr, GROUP, TOPIC), Offset::Offset(10));

    // The background thread's recovery-point writes fail too; they are retried once a
    // checkpoint interval (1 s), not on every 20 ms tick with a warning each time.
    let full_s = filled.elapsed().as_secs();
    let warnings = b.log_text().matches(CHECKPOINT_FAILED_LOG).count() as u64;
    assert!(
        warnings <= 4 * (full_s + 2),
        "{warnings} recovery-point warnings in {full_s} s on a full disk, for 4 partitions"
    );

    // Space freed: the same process takes writes again.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&top_up).unwrap();
    for i in 0..10 {
        for (part, acks) in acked.iter_mut().enumerate() {
            let v = value(&format!("p{part}-after"), i, 32 << 10);
            let offset = p
                .send(TOPIC, part as i32, &v)
                .unwrap_or_else(|e| panic!("produce to p{part} once space is freed: {e}"));
            acks.push((offset, v));
        }
    }
    for i in 0..5 {
        let v = value("rolling-after", i, 32 << 10);
        let offset = p
            .send(ROLLING, 0, &v)
            .unwrap_or_else(|e| panic!("produce to {ROLLING} once space is freed: {e}"));
        rolling.push((offset, v));
    }
    commit(&b.addr, GROUP, TOPIC, 25, "").expect("commit once space is freed");
    assert!(
        !b.log_text().contains(POISONED_LOG),
        "ENOSPC on a write must not poison the partition:\n{}",
        b.log_text()
    );
    for (part, acks) in acked.iter().enumerate() {
        assert_eq!(
            &read_all(&b.addr, TOPIC, part as i32),
            acks,
            "p{part} once space is freed"
        );
    }
    assert_eq!(
        read_all(&b.addr, ROLLING, 0),
        rolling,
        "rolling once space is freed"
    );

    // And the disk holds nothing corrupt: a crash and recovery serve the same.
    b.kill9();
    let b = Served::start(&data, &dir.0.join("restarted.log"), &[]);
    for (part, acks) in acked.iter().enumerate() {
        assert_eq!(
            &read_all(&b.addr, TOPIC, part as i32),
            acks,
            "p{part} after restart"
        );
    }
    assert_eq!(
        read_all(&b.addr, ROLLING, 0),
        rolling,
        "rolling after restart"
    );
    assert_eq!(committed(&b.addr, GROUP, TOPIC), Offset::Offset(25));
    let log = b.log_text();
    for damage in RECOVERY_DAMAGE_LOGS {
        assert!(!log.contains(damage), "recovery found damage:\n{log}");
    }
    drop(b);
    drop(disk);
}
