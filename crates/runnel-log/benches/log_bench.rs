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
//! first. All cases run once per round, each log case next to its ceilings; rounds repeat
//! (at most [`ROUNDS_MAX`], within [`RUN_TIME_BUDGET`]), because on a virtual machine one
//! round can be disturbed by the host (page-cache writes that must first fault memory
//! in, a slow flush). The table shows the median, best and worst round, and ratios to
//! the ceiling both of medians and of best rounds; a target counts as met only if both
//! ratios meet it (a throughput target: only if the worst round does). An unreported
//! warm-up write precedes each group of page-cache write cases. Latency quantiles are
//! over every call of every round.
//!
//! Data lives in a fresh directory under Cargo's target temp dir (same disk as the
//! build), removed as soon as each case ends, and the directory is synced so that the
//! freeing of blocks is not billed to the next case. Logs are dropped rather than
//! closed: closing would fsync hundreds of MiB nobody reads again. The `never` cases and
//! the buffered ceilings stay below the kernel's dirty-page thresholds, so both measure
//! writes into the page cache, not the disk.
//!
//! Run: `cargo bench -p runnel-log --bench log_bench`. Arguments that do not start with
//! `-` select cases whose name contains them, e.g. `... -- always/16K` (useful under
//! `perf` or `strace`); ratios whose ceiling did not run are shown as `-`. With
//! `RUNNEL_BENCH_BATCH_RECORDS=N` (1 to 4096) the write cases also run with batches of
//! N 1 KiB records, named `Nx1K`.

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
const CASE_TIME_MAX: Duration = Duration::from_secs(3);
/// Every case runs once per round; the table reports the median over rounds.
const ROUNDS_MAX: usize = 5;
/// No round starts that would, at the average pace so far, end after this.
const RUN_TIME_BUDGET: Duration = Duration::from_secs(150);
/// Data written before the read cases, then read back...
const READ_DATA_BYTES: u64 = 512 << 20;
/// ...or as much as can be written in this long, on a slow machine.
const READ_SETUP_TIME_MAX: Duration = Duration::from_secs(10);
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

/// Ceiling: writes a file of [`READ_DATA_BYTES`], then reads it back from the page cache
/// with 1 MiB `pread`s.
fn read_ceiling(dir: &Path) -> Measured {
    let (paths, mut files) = create_files(dir, "read-ceiling", 1);
    let file = files.pop().expect("one file");
    let chunk = vec![0x5a_u8; READ_CHUNK_BYTES];
    let setup_deadline = Instant::now() + READ_SETUP_TIME_MAX;
    let mut size = 0;
    while size < READ_DATA_BYTES && Instant::now() < setup_deadline {
        file.write_all_at(&chunk, size).expect("write");
        size += chunk.len() as u64;
    }
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let deadline = Instant::now() + CASE_TIME_MAX;
    let mut m = Measured::default();
    let start = Instant::now();
    'passes: for _ in 0..READ_PASSES {
        let mut pos = 0;
        while pos < size {
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
    let setup_deadline = Instant::now() + READ_SETUP_TIME_MAX;
    let mut written = 0;
    while written < READ_DATA_BYTES && Instant::now() < setup_deadline {
        p.append(batch).expect("append");
        written += batch.len() as u64;
    }
    let end = p.high_watermark();
    let deadline = Instant::now() + CASE_TIME_MAX;
    let mut m = Measured::default();
    let mut records = 0u64;
    // One buffer for every read, as a consumer loop (or a broker's fetch path) keeps.
    let mut buf = Vec::with_capacity(READ_CHUNK_BYTES);
    let start = Instant::now();
    'passes: for _ in 0..READ_PASSES {
        let mut offset = p.log_start_offset();
        while offset < end {
            if Instant::now() >= deadline {
                break 'passes;
            }
            let t = Instant::now();
            p.read_into(offset, READ_CHUNK_BYTES, &mut buf)
                .expect("read");
            m.latencies.push(t.elapsed().as_nanos() as u64);
            assert!(!buf.is_empty(), "read below the high watermark was empty");
            let mut pos = 0;
            while pos < buf.len() {
                let h = BatchHeader::parse(&buf[pos..]).expect("whole batches");
                records += h.record_count() as u64;
                offset = h.last_offset().plus(1);
                pos += h.total_bytes() as usize;
            }
            m.bytes += buf.len() as u64;
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

/// A record as [`batch::build_batch`] takes it: `(key, value)`.
type Record<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A batch of `records` records, each with a 1 KiB value and no key.
fn make_batch(records: usize) -> Vec<u8> {
    let value = vec![0xa5_u8; RECORD_VALUE_BYTES];
    let recs: Vec<Record<'_>> = (0..records).map(|_| (None, Some(&value[..]))).collect();
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

/// One benchmark case: how to run it once, and what to compare it with.
struct Case<'a> {
    name: String,
    /// The case whose throughput is the ceiling for this one.
    ceiling: Option<String>,
    target: Target,
    run: Box<dyn Fn(&Path) -> Measured + 'a>,
    /// A warm-up: run in every round whatever the filter, never reported.
    warmup: bool,
    /// One result per round.
    results: Vec<Measured>,
}

impl Case<'_> {
    /// Throughput of every round, ascending.
    fn sorted_rates(&self, rate: fn(&Measured) -> f64) -> Vec<f64> {
        let mut v: Vec<f64> = self.results.iter().map(rate).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// Median over rounds of `rate`.
    fn median(&self, rate: fn(&Measured) -> f64) -> Option<f64> {
        median(&self.sorted_rates(rate))
    }

    /// The latency quantile `q` over the calls of all rounds.
    fn latency(&self, q: f64) -> Duration {
        let mut all = Measured {
            latencies: self
                .results
                .iter()
                .flat_map(|m| m.latencies.iter().copied())
                .collect(),
            ..Measured::default()
        };
        all.latency(q)
    }
}

/// The benchmark: its data directory, case filter and cases.
struct Bench<'a> {
    dir: PathBuf,
    filters: Vec<String>,
    cases: Vec<Case<'a>>,
}

impl<'a> Bench<'a> {
    /// Adds a case, if the command line selects it.
    fn add(
        &mut self,
        name: String,
        ceiling: Option<String>,
        target: Target,
        run: impl Fn(&Path) -> Measured + 'a,
    ) {
        if self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str())) {
            self.cases.push(Case {
                name,
                ceiling,
                target,
                run: Box::new(run),
                warmup: false,
                results: Vec::new(),
            });
        }
    }

    /// Adds a warm-up step: it runs in every round, and its result is not reported.
    fn add_warmup(&mut self, name: String, run: impl Fn(&Path) -> Measured + 'a) {
        self.cases.push(Case {
            name,
            ceiling: None,
            target: Target::None,
            run: Box::new(run),
            warmup: true,
            results: Vec::new(),
        });
    }

    /// Runs every case once, in order, each in a fresh subdirectory.
    fn round(&mut self, round: usize) {
        eprintln!("# round {round}");
        for case in &mut self.cases {
            let dir = self.dir.join(case.name.replace('/', "-"));
            let mut m = (case.run)(&dir);
            eprintln!(
                "{:<26} {:>8.1} MB/s {:>8.0} ops/s  p50 {:>8.1?}  p99 {:>8.1?}  {:>4} MiB in {:.2?}",
                case.name,
                m.bytes_per_sec() / 1e6,
                m.ops_per_sec(),
                m.latency(0.50),
                m.latency(0.99),
                m.bytes >> 20,
                m.elapsed,
            );
            case.results.push(m);
        }
    }

    /// The rounds' throughputs of the reported case `name`, ascending.
    fn rates(&self, name: &str) -> Option<Vec<f64>> {
        self.cases
            .iter()
            .find(|c| c.name == name && !c.warmup && !c.results.is_empty())
            .map(|c| c.sorted_rates(Measured::bytes_per_sec))
    }

    /// Prints the results as a Markdown table. Throughput: the median over rounds, the
    /// best and the worst round. Latency quantiles: over all calls of all rounds. Ratios
    /// to the ceiling: of the medians, and of the best rounds. Disturbances on a shared
    /// machine only ever slow a round down, so the best rounds compare what each side
    /// can do, and the medians what it usually does; a ratio target counts as met only
    /// if both ratios meet it, and a throughput target only if the worst round does.
    fn print_table(&self) {
        println!(
            "| case | MB/s median | best | worst | ops/s | p50 | p99 | ceiling | ratio of medians | ratio of bests | target | met |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|");
        for case in self.cases.iter().filter(|c| !c.warmup) {
            let (Some(rates), Some(median)) =
                (self.rates(&case.name), case.median(Measured::bytes_per_sec))
            else {
                continue;
            };
            let (worst, best) = (rates[0], rates[rates.len() - 1]);
            let ceiling = case.ceiling.as_deref().and_then(|c| self.rates(c));
            let ratios = ceiling
                .as_deref()
                .and_then(|c| Some((median / self::median(c)?, best / c.last()?)));
            let (target, met) = match case.target {
                Target::None => ("-".to_string(), "-".to_string()),
                Target::Ratio(t) => (
                    format!(">= {:.0}%", t * 100.0),
                    ratios.map_or("-".into(), |(m, b)| yes_no(m.min(b) >= t)),
                ),
                Target::BytesPerSec(t) => (format!(">= {:.1} GB/s", t / 1e9), yes_no(worst >= t)),
            };
            let percent = |r: Option<f64>| r.map_or("-".into(), |r| format!("{:.0}%", r * 100.0));
            println!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1?} | {:.1?} | {} | {} | {} | {} | {} |",
                case.name,
                median / 1e6,
                best / 1e6,
                worst / 1e6,
                case.median(Measured::ops_per_sec).unwrap_or(0.0),
                case.latency(0.50),
                case.latency(0.99),
                case.ceiling.as_deref().unwrap_or("-"),
                percent(ratios.map(|r| r.0)),
                percent(ratios.map(|r| r.1)),
                target,
                met,
            );
        }
    }
}

/// The median of ascending `v`, `None` when empty.
fn median(v: &[f64]) -> Option<f64> {
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
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

/// Runs `f` in a freshly created `dir`, removing it afterwards.
fn with_dir(dir: &Path, f: impl FnOnce(&Path) -> Measured) -> Measured {
    fs::create_dir_all(dir).expect("create a case directory");
    let m = f(dir);
    remove(dir);
    m
}

/// Adds the cases for one batch size, each log case next to its ceilings so that both
/// run under similar conditions.
fn add_write_cases<'a>(bench: &mut Bench<'a>, size: &str, batch: &'a [u8]) {
    for (kind, durability, sync_each) in [
        ("buffered", Durability::Never, false),
        ("fdatasync", Durability::Always, true),
    ] {
        if !sync_each {
            // Writing into the page cache first needs free memory. On a VM that hands
            // freed memory back to the host (virtio-balloon free page reporting), the
            // first writer after a quiet spell pays for faulting it back in; this
            // unreported write puts the ceiling and the log on the same footing.
            bench.add_warmup(format!("warmup/{kind}/{size}"), move |d| {
                with_dir(d, |d| write_ceiling(d, batch, 1, false))
            });
        }
        for writers in [1, WRITERS] {
            bench.add(
                format!("ceiling/{kind}/{size}/{writers}w"),
                None,
                Target::None,
                move |d| with_dir(d, |d| write_ceiling(d, batch, writers, sync_each)),
            );
        }
        for (partitions, appenders, label) in [
            (1, 1, "1p1a"),
            (WRITERS as u32, WRITERS, "8p8a"),
            (1, WRITERS, "1p8a"),
        ] {
            // Under `never`, appenders sharing a partition share a file, so their
            // ceiling is the single-file one. Under `always`, any 8 appenders are judged
            // against 8 independent fdatasync streams: the target.
            let (ceiling_writers, target) = match durability {
                Durability::Always if appenders > 1 => (appenders, Target::Ratio(TARGET_ALWAYS_8)),
                Durability::Always => (1, Target::None),
                _ => (partitions as usize, Target::Ratio(TARGET_NEVER)),
            };
            bench.add(
                format!("log/{durability}/{size}/{label}"),
                Some(format!("ceiling/{kind}/{size}/{ceiling_writers}w")),
                target,
                move |d| append_case(d, batch, durability, partitions, appenders),
            );
        }
    }
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let dir = data_root();
    fs::create_dir_all(&dir).expect("create the benchmark directory");
    let small = make_batch(SMALL_BATCH_RECORDS);
    let large = make_batch(LARGE_BATCH_RECORDS);
    // Another batch size, to give a ceiling for the batches some client really sent
    // (scripts/bench-broker measures them and passes this).
    let extra = std::env::var("RUNNEL_BENCH_BATCH_RECORDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=4096).contains(n))
        .map(|records| (format!("{records}x1K"), make_batch(records)));
    eprintln!(
        "runnel-log storage benchmark in {}\n\
         {} CPUs; batches of {} and {} bytes; each case stops at {} MiB or {:?}; \
         up to {ROUNDS_MAX} rounds within {:?}",
        dir.display(),
        thread::available_parallelism().map_or(0, |n| n.get()),
        small.len(),
        large.len(),
        CASE_BYTES_MAX >> 20,
        CASE_TIME_MAX,
        RUN_TIME_BUDGET,
    );
    let mut bench = Bench {
        dir,
        filters,
        cases: Vec::new(),
    };
    add_write_cases(&mut bench, "16K", &small);
    add_write_cases(&mut bench, "256K", &large);
    if let Some((name, batch)) = &extra {
        add_write_cases(&mut bench, name, batch);
    }
    bench.add("ceiling/pread/1M".into(), None, Target::None, |d| {
        with_dir(d, read_ceiling)
    });
    bench.add(
        "log/read/16K/1M".into(),
        Some("ceiling/pread/1M".into()),
        Target::BytesPerSec(TARGET_READ_BYTES_PER_SEC),
        |d| read_case(d, &small),
    );

    // Repeat, so that a disturbance (another process, the VM host) moves one round's
    // figure, not the median; stop early when another round would break the budget.
    let start = Instant::now();
    for round in 1..=ROUNDS_MAX {
        bench.round(round);
        let per_round = start.elapsed() / round as u32;
        if start.elapsed() + per_round > RUN_TIME_BUDGET {
            break;
        }
    }
    eprintln!("# done in {:.1?}", start.elapsed());
    println!();
    bench.print_table();
    let _ = fs::remove_dir(&bench.dir);
}
