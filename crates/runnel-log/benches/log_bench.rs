//! # Storage benchmark for `runnel-log`
//!
//! Measures what the log costs on this machine by running it on the real file system
//! ([`Log::open`], hence `StdStorage`) next to plain `std::fs` code doing the same I/O,
//! in the same run, on the same disk. Every log figure is printed together with its
//! ratio to the matching ceiling, so the numbers mean something on any machine:
//!
//! | log case                                   | ceiling it is compared with                 |
//! |--------------------------------------------|---------------------------------------------|
//! | append, `never`, 1 appender                | buffered `pwrite`, same chunk, 1 file        |
//! | append, `never`, 8 appenders, 8 partitions | buffered `pwrite`, same chunk, 8 files       |
//! | append, `never`, 8 appenders, 1 partition  | buffered `pwrite`, same chunk, 1 file        |
//! | append, `always`, 1 appender               | `pwrite` + `fdatasync` each, 1 file          |
//! | append, `always`, 8 appenders (either)     | `pwrite` + `fdatasync` each, 8 files         |
//! | read from the page cache, 1 MiB reads      | `pread` of 1 MiB chunks of a cached file     |
//!
//! Batches hold 1 KiB records: 16 of them (a "16 KiB" batch) or 256 (a "256 KiB" batch),
//! built once with [`batch::build_batch`] and appended again and again (the log rewrites
//! the base offset). The ceilings write chunks of exactly the batch's size, so both sides
//! move the same bytes in the same number of calls.
//!
//! Targets (from the issue): `never` at least 70% of buffered write bandwidth; `always`
//! with 8 appenders at least 60% of what 8 writers doing plain `fdatasync`'d writes reach;
//! reads from the page cache at least 1 GB/s. MB and GB are 10^6 and 10^9 bytes.
//!
//! Every case stops after [`CASE_BYTES_MAX`] bytes or [`CASE_TIME_MAX`], whichever comes
//! first, so the whole run stays within a few minutes even on a slow disk. Data lives in
//! a fresh directory under Cargo's target temp dir (same disk as the build), removed as
//! soon as each case ends. Logs are dropped rather than closed: closing would fsync
//! hundreds of MiB nobody reads again.
//!
//! Run: `cargo bench -p runnel-log --bench log_bench`. Arguments that do not start with
//! `-` select cases whose name contains them, e.g. `... -- always/16K` (useful under
//! `perf` or `strace`); ratios whose ceiling did not run are shown as `-`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use runnel_log::batch::{self, BatchHeader};
use runnel_log::{Durability, Log, LogConfig, PartitionId};

/// Size of one record's value.
const RECORD_VALUE_BYTES: usize = 1024;
/// Records in a "16 KiB" batch.
const SMALL_BATCH_RECORDS: usize = 16;
/// Records in a "256 KiB" batch.
const LARGE_BATCH_RECORDS: usize = 256;
/// Concurrent appenders (and ceiling writers) in the multi-threaded cases.
const WRITERS: usize = 8;
/// A write case stops after moving this many bytes in total...
const CASE_BYTES_MAX: u64 = 512 << 20;
/// ...or after this long, whichever comes first.
const CASE_TIME_MAX: Duration = Duration::from_secs(8);
/// Data written before the read cases, then read back.
const READ_DATA_BYTES: u64 = 512 << 20;
/// Bytes asked for per read, like a consumer's `max.partition.fetch.bytes`.
const READ_CHUNK_BYTES: usize = 1 << 20;
/// Full passes over the read data; a read case also stops at [`CASE_TIME_MAX`].
const READ_PASSES: u32 = 3;
/// Target: `never` appends reach this share of buffered write bandwidth.
const TARGET_NEVER: f64 = 0.70;
/// Target: `always` appends with 8 appenders reach this share of fdatasync'd writes.
const TARGET_ALWAYS_8: f64 = 0.60;
/// Target: reads from the page cache, in bytes per second.
const TARGET_READ_BYTES_PER_SEC: f64 = 1e9;

/// What one case moved, and how long it took.
#[derive(Debug, Default)]
struct Measured {
    /// Bytes written or read, over all threads.
    bytes: u64,
    /// Calls made (appends, writes or reads), over all threads.
    ops: u64,
    /// From the moment all threads were released to the moment the last one finished.
    elapsed: Duration,
    /// Duration of every call, in nanoseconds, unsorted.
    latencies: Vec<u64>,
}

impl Measured {
    fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile of the call latencies (0 when there were none).
    fn latency(&mut self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        Duration::from_nanos(self.latencies[i])
    }
}

/// Runs `workers` threads that each call `op(worker, call number)` until they have
/// moved their share of `bytes_max` or [`CASE_TIME_MAX`] has passed. `op` returns the
/// bytes it moved. Threads start together, after a barrier.
fn drive(workers: usize, bytes_max: u64, op: &(dyn Fn(usize, u64) -> u64 + Sync)) -> Measured {
    let share = bytes_max / workers as u64;
    let barrier = Barrier::new(workers + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let deadline = Instant::now() + CASE_TIME_MAX;
                    let mut m = Measured::default();
                    while m.bytes < share && Instant::now() < deadline {
                        let t = Instant::now();
                        m.bytes += op(w, m.ops);
                        m.latencies.push(t.elapsed().as_nanos() as u64);
                        m.ops += 1;
                    }
                    m
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut total = Measured::default();
        for h in handles {
            let m = h.join().expect("a benchmark thread panicked");
            total.bytes += m.bytes;
            total.ops += m.ops;
            total.latencies.extend(m.latencies);
        }
        total.elapsed = start.elapsed();
        total
    })
}

/// Makes the previous case's file deletions durable (ext4 frees and discards blocks at
/// the next journal commit), so that work is not billed to the next case.
fn settle(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("sync the benchmark directory");
}

fn remove(path: &Path) {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    result.expect("remove benchmark data");
    if let Some(parent) = path.parent() {
        settle(parent);
    }
}

fn create_files(dir: &Path, name: &str, n: usize) -> (Vec<PathBuf>, Vec<File>) {
    let paths: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("{name}-{i}"))).collect();
    let files = paths
        .iter()
        .map(|p| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(p)
                .expect("create a ceiling file")
        })
        .collect();
    (paths, files)
}

/// Ceiling: `writers` threads each append `chunk` to their own file with `pwrite`,
/// optionally calling `fdatasync` after every write.
fn write_ceiling(dir: &Path, chunk: &[u8], writers: usize, sync_each: bool) -> Measured {
    let (paths, files) = create_files(dir, "ceiling", writers);
    let len = chunk.len() as u64;
    let m = drive(writers, CASE_BYTES_MAX, &|w, i| {
        let f = &files[w];
        f.write_all_at(chunk, i * len).expect("write");
        if sync_each {
            f.sync_data().expect("fdatasync");
        }
        len
    });
    drop(files);
    for p in &paths {
        remove(p);
    }
    m
}

/// Ceiling: reads a cached file of [`READ_DATA_BYTES`] with 1 MiB `pread`s.
fn read_ceiling(dir: &Path) -> Measured {
    let (paths, mut files) = create_files(dir, "read-ceiling", 1);
    let file = files.pop().expect("one file");
    let chunk = vec![0x5a_u8; READ_CHUNK_BYTES];
    let mut pos = 0;
    while pos < READ_DATA_BYTES {
        file.write_all_at(&chunk, pos).expect("write");
        pos += chunk.len() as u64;
    }
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let deadline = Instant::now() + CASE_TIME_MAX;
    let mut m = Measured::default();
    let start = Instant::now();
    'passes: for _ in 0..READ_PASSES {
        let mut pos = 0;
        while pos < READ_DATA_BYTES {
            if Instant::now() >= deadline {
                break 'passes;
            }
            let t = Instant::now();
            let n = file.read_at(&mut buf, pos).expect("read");
            assert!(n > 0, "the file is shorter than written");
            m.latencies.push(t.elapsed().as_nanos() as u64);
            pos += n as u64;
            m.bytes += n as u64;
            m.ops += 1;
        }
    }
    m.elapsed = start.elapsed();
    drop(file);
    remove(&paths[0]);
    m
}

/// Opens a fresh log in `dir` with one topic of `partitions` partitions.
fn open_log(dir: &Path, durability: Durability, partitions: u32) -> Log {
    let mut config = LogConfig::new(dir);
    config.topic_defaults.durability = durability;
    let log = Log::open(config).expect("open the log");
    log.create_topic("bench", partitions, &BTreeMap::new())
        .expect("create the topic");
    log
}

/// `appenders` threads append `batch` to a topic of `partitions` partitions; appender
/// `w` writes to partition `w % partitions`.
fn append_case(
    dir: &Path,
    batch: &[u8],
    durability: Durability,
    partitions: u32,
    appenders: usize,
) -> Measured {
    let log = open_log(dir, durability, partitions);
    let parts = log.topic("bench").expect("the topic exists").partitions();
    let m = drive(appenders, CASE_BYTES_MAX, &|w, _| {
        parts[w % parts.len()].append(batch).expect("append");
        batch.len() as u64
    });
    drop(parts);
    drop(log);
    remove(dir);
    m
}

/// Writes [`READ_DATA_BYTES`] of `batch` (`never` durability, 1 partition), then reads
/// the partition from the start with 1 MiB reads, walking batch headers to find the next
/// offset, as a consumer does.
fn read_case(dir: &Path, batch: &[u8]) -> Measured {
    let log = open_log(dir, Durability::Never, 1);
    let p = log.partition("bench", PartitionId(0)).expect("partition 0");
    let mut written = 0;
    while written < READ_DATA_BYTES {
        p.append(batch).expect("append");
        written += batch.len() as u64;
    }
    let end = p.high_watermark();
    let deadline = Instant::now() + CASE_TIME_MAX;
    let mut m = Measured::default();
    let mut records = 0u64;
    let start = Instant::now();
    'passes: for _ in 0..READ_PASSES {
        let mut offset = p.log_start_offset();
        while offset < end {
            if Instant::now() >= deadline {
                break 'passes;
            }
            let t = Instant::now();
            let r = p.read(offset, READ_CHUNK_BYTES).expect("read");
            m.latencies.push(t.elapsed().as_nanos() as u64);
            assert!(
                !r.bytes.is_empty(),
                "read below the high watermark was empty"
            );
            let mut pos = 0;
            while pos < r.bytes.len() {
                let h = BatchHeader::parse(&r.bytes[pos..]).expect("whole batches");
                records += h.record_count() as u64;
                offset = h.last_offset().plus(1);
                pos += h.total_bytes() as usize;
            }
            m.bytes += r.bytes.len() as u64;
            m.ops += 1;
        }
    }
    m.elapsed = start.elapsed();
    assert!(records > 0, "nothing was read");
    drop(p);
    drop(log);
    remove(dir);
    m
}

/// A batch of `records` records, each with a 1 KiB value and no key.
fn make_batch(records: usize) -> Vec<u8> {
    let value = vec![0xa5_u8; RECORD_VALUE_BYTES];
    let recs: Vec<(Option<&[u8]>, Option<&[u8]>)> =
        (0..records).map(|_| (None, Some(&value[..]))).collect();
    batch::build_batch(&recs, 1_700_000_000_000)
}

/// What a result is judged against.
#[derive(Clone, Copy)]
enum Target {
    /// No target; the ratio is shown for information.
    None,
    /// The ratio to the ceiling must reach this.
    Ratio(f64),
    /// Bytes per second must reach this.
    BytesPerSec(f64),
}

/// One line of the final table.
struct Row {
    name: String,
    m: Measured,
    ceiling: Option<String>,
    target: Target,
}

/// The benchmark: its data directory, case filter and results so far.
struct Bench {
    dir: PathBuf,
    filters: Vec<String>,
    rows: Vec<Row>,
}

impl Bench {
    fn selected(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }

    /// Runs `case` in a fresh subdirectory if `name` is selected, and records the result.
    fn run(
        &mut self,
        name: &str,
        ceiling: Option<&str>,
        target: Target,
        case: impl FnOnce(&Path) -> Measured,
    ) {
        if !self.selected(name) {
            return;
        }
        eprint!("{name:<32} ");
        let dir = self.dir.join(name.replace('/', "-"));
        let mut m = case(&dir);
        eprintln!(
            "{:>9.1} MB/s {:>9.0} ops/s  p50 {:>9.1?}  p99 {:>9.1?}  ({} MiB in {:.2?})",
            m.bytes_per_sec() / 1e6,
            m.ops_per_sec(),
            m.latency(0.50),
            m.latency(0.99),
            m.bytes >> 20,
            m.elapsed,
        );
        self.rows.push(Row {
            name: name.to_string(),
            m,
            ceiling: ceiling.map(str::to_string),
            target,
        });
    }

    fn bytes_per_sec(&self, name: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.m.bytes_per_sec())
    }

    fn print_table(&mut self) {
        println!();
        println!(
            "| case | MB/s | ops/s | p50 | p99 | ceiling | ceiling MB/s | ratio | target | met |"
        );
        println!("|---|---:|---:|---:|---:|---|---:|---:|---|---|");
        let ceilings: Vec<Option<f64>> = self
            .rows
            .iter()
            .map(|r| r.ceiling.as_deref().and_then(|c| self.bytes_per_sec(c)))
            .collect();
        for (row, ceiling_bps) in self.rows.iter_mut().zip(ceilings) {
            let bps = row.m.bytes_per_sec();
            let ratio = ceiling_bps.map(|c| bps / c);
            let (target, met) = match row.target {
                Target::None => ("-".to_string(), "-".to_string()),
                Target::Ratio(t) => (
                    format!(">= {:.0}%", t * 100.0),
                    ratio.map_or("-".into(), |r| yes_no(r >= t)),
                ),
                Target::BytesPerSec(t) => (format!(">= {:.1} GB/s", t / 1e9), yes_no(bps >= t)),
            };
            println!(
                "| {} | {:.1} | {:.0} | {:.1?} | {:.1?} | {} | {} | {} | {} | {} |",
                row.name,
                bps / 1e6,
                row.m.ops_per_sec(),
                row.m.latency(0.50),
                row.m.latency(0.99),
                row.ceiling.as_deref().unwrap_or("-"),
                ceiling_bps.map_or("-".into(), |c| format!("{:.1}", c / 1e6)),
                ratio.map_or("-".into(), |r| format!("{:.0}%", r * 100.0)),
                target,
                met,
            );
        }
    }
}

fn yes_no(b: bool) -> String {
    (if b { "yes" } else { "NO" }).to_string()
}

fn data_root() -> PathBuf {
    // Cargo sets CARGO_TARGET_TMPDIR for benches: `target/tmp`, on the build's disk.
    let base = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    base.join(format!("runnel-log-bench-{}", std::process::id()))
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let dir = data_root();
    fs::create_dir_all(&dir).expect("create the benchmark directory");
    eprintln!(
        "runnel-log storage benchmark in {} ({} CPUs); each case stops at {} MiB or {:?}",
        dir.display(),
        thread::available_parallelism().map_or(0, |n| n.get()),
        CASE_BYTES_MAX >> 20,
        CASE_TIME_MAX,
    );
    let mut bench = Bench {
        dir,
        filters,
        rows: Vec::new(),
    };
    let batches = [
        ("16K", make_batch(SMALL_BATCH_RECORDS)),
        ("256K", make_batch(LARGE_BATCH_RECORDS)),
    ];
    for (size, batch) in &batches {
        eprintln!("# {size} batches: {} bytes each", batch.len());
    }

    // The machine's ceilings, with plain std::fs code.
    for (size, batch) in &batches {
        for writers in [1, WRITERS] {
            bench.run(
                &format!("ceiling/buffered/{size}/{writers}w"),
                None,
                Target::None,
                |d| with_dir(d, |d| write_ceiling(d, batch, writers, false)),
            );
            bench.run(
                &format!("ceiling/fdatasync/{size}/{writers}w"),
                None,
                Target::None,
                |d| with_dir(d, |d| write_ceiling(d, batch, writers, true)),
            );
        }
    }
    bench.run("ceiling/pread/1M", None, Target::None, |d| {
        with_dir(d, read_ceiling)
    });

    // The log: appends.
    for (durability, kind) in [(Durability::Never, "never"), (Durability::Always, "always")] {
        for (size, batch) in &batches {
            for (partitions, appenders, label) in [
                (1, 1, "1p1a"),
                (WRITERS as u32, WRITERS, "8p8a"),
                (1, WRITERS, "1p8a"),
            ] {
                let (ceiling_kind, target) = match durability {
                    Durability::Always if appenders > 1 => {
                        ("fdatasync", Target::Ratio(TARGET_ALWAYS_8))
                    }
                    Durability::Always => ("fdatasync", Target::None),
                    _ => ("buffered", Target::Ratio(TARGET_NEVER)),
                };
                // Appenders sharing one partition share one file: their ceiling is the
                // single-file one, except under `always`, where 8 appenders are judged
                // against 8 independent fdatasync streams (the target).
                let ceiling_writers = match (durability, partitions) {
                    (Durability::Always, _) => appenders,
                    (_, 1) => 1,
                    _ => appenders,
                };
                let ceiling = format!("ceiling/{ceiling_kind}/{size}/{ceiling_writers}w");
                bench.run(
                    &format!("log/{kind}/{size}/{label}"),
                    Some(&ceiling),
                    target,
                    |d| append_case(d, batch, durability, partitions, appenders),
                );
            }
        }
    }

    // The log: reads from the page cache.
    bench.run(
        "log/read/16K/1M",
        Some("ceiling/pread/1M"),
        Target::BytesPerSec(TARGET_READ_BYTES_PER_SEC),
        |d| read_case(d, &batches[0].1),
    );

    bench.print_table();
    let _ = fs::remove_dir(&bench.dir);
}

/// Runs `f` in a freshly created `dir`, removing it afterwards.
fn with_dir(dir: &Path, f: impl FnOnce(&Path) -> Measured) -> Measured {
    fs::create_dir_all(dir).expect("create a case directory");
    let m = f(dir);
    remove(dir);
    m
}
