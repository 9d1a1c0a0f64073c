//! A disk whose syncs hang stalls only the requests that wait for those syncs. With the
//! broker's two runtime threads, a lock held across an fsync and taken on a runtime
//! thread (or blocking work run there) would stall every API, heartbeats included, and
//! groups would rebalance. Here every fsync waits at a gate the test holds closed, while
//! other connections' ApiVersions, Metadata, Fetch, OffsetFetch and Heartbeat must be
//! answered. The assertion is about behaviour, not speed: each answer comes while the
//! gate is still closed (a stall shows as the client's read deadline passing).

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::raw::Client;
use common::requests;
use common::{TempDir, TestBroker};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiVersionsRequest, CreateTopicsRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, SyncGroupRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use runnel_log::{DirEntry, DirLock, OpenMode, StdStorage, Storage, StorageFile};

/// Where every fsync waits while the test holds it closed.
#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
    /// Syncs waiting at the gate right now.
    waiting: AtomicUsize,
}

impl Gate {
    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        if !*closed {
            return;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // Bounded: a test that forgets to open the gate still ends.
        let (guard, _) = self
            .opened
            .wait_timeout_while(closed, Duration::from_secs(60), |c| *c)
            .unwrap();
        closed = guard;
        drop(closed);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }

    /// Waits until `n` syncs wait at the gate.
    fn until_waiting(&self, n: usize, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.waiting.load(Ordering::SeqCst) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{what} never reached its fsync"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The real file system, with every data and directory sync going through the gate.
#[derive(Debug)]
struct Gated {
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedFile {
    inner: Arc<dyn StorageFile>,
    gate: Arc<Gate>,
}

impl StorageFile for GatedFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.gate.pass();
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

impl Storage for Gated {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let inner = StdStorage.open(path, mode)?;
        Ok(Arc::new(GatedFile {
            inner,
            gate: self.gate.clone(),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        StdStorage.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        StdStorage.list_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        StdStorage.exists(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdStorage.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        StdStorage.remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdStorage.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.gate.pass();
        StdStorage.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        StdStorage.lock(path)
    }
}

/// A broker on the gated disk (the shared test broker: the runtime `runnel serve` uses,
/// two worker threads). The gate opens before the broker stops.
struct SlowBroker {
    broker: TestBroker,
    gate: Arc<Gate>,
}

impl SlowBroker {
    fn start(dir: &Path) -> SlowBroker {
        let gate = Arc::new(Gate::default());
        let storage = Arc::new(Gated { gate: gate.clone() });
        SlowBroker {
            broker: TestBroker::start_on(dir, storage),
            gate,
        }
    }
}

impl Drop for SlowBroker {
    fn drop(&mut self) {
        self.gate.set(false);
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Four partitions; the slow disk gets a minute, not the usual five seconds.
fn create_topic_request(topic: &str) -> CreateTopicsRequest {
    let mut req = requests::create_topic_request(topic, 4, &[]);
    req.timeout_ms = 60_000;
    req
}

/// One record to partition 0, waiting up to a minute for the slow disk.
fn produce_request(topic: &str) -> ProduceRequest {
    let batch = runnel_log::batch::build_batch(&[(Some(&b"k"[..]), Some(&b"v"[..]))], 1_000);
    let mut req = requests::produce_request(topic, 0, &batch, -1);
    req.timeout_ms = 60_000;
    req
}

fn commit_request(group: &str, topic: &str) -> OffsetCommitRequest {
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = 1;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = vec![p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(s(group));
    r.generation_id_or_member_epoch = -1;
    r.topics = vec![t];
    r
}

fn offset_fetch(c: &mut Client, group: &str, topic: &str) -> i64 {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(s(topic));
    t.partition_indexes = vec![0];
    let mut r = OffsetFetchRequest::default();
    r.group_id = GroupId(s(group));
    r.topics = Some(vec![t]);
    let resp = c.call(&r, 7);
    assert_eq!(resp.error_code, 0);
    resp.topics[0].partitions[0].committed_offset
}

fn fetch(c: &mut Client, topic: &str) -> usize {
    let resp = c.call(&requests::fetch_request(topic, 0, 0, 1 << 20, 0), 11);
    let part = &resp.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    part.records.as_ref().map_or(0, Bytes::len)
}

/// A member alone in `group`, generation 1: (member id, generation).
fn member(c: &mut Client, group: &str) -> (StrBytes, i32) {
    let join = |member: StrBytes| {
        let mut p = JoinGroupRequestProtocol::default();
        p.name = s("range");
        p.metadata = Bytes::from_static(b"subscription");
        let mut r = JoinGroupRequest::default();
        r.group_id = GroupId(s(group));
        r.session_timeout_ms = 10_000;
        r.rebalance_timeout_ms = 10_000;
        r.member_id = member;
        r.protocol_type = s("consumer");
        r.protocols = vec![p];
        r
    };
    let first = c.call(&join(s("")), 5);
    let joined = c.call(&join(first.member_id.clone()), 5);
    assert_eq!(joined.error_code, 0, "{joined:?}");
    let mut a = SyncGroupRequestAssignment::default();
    a.member_id = joined.member_id.clone();
    a.assignment = Bytes::from_static(b"all");
    let mut sync = SyncGroupRequest::default();
    sync.group_id = GroupId(s(group));
    sync.generation_id = joined.generation_id;
    sync.member_id = joined.member_id.clone();
    sync.assignments = vec![a];
    assert_eq!(c.call(&sync, 3).error_code, 0);
    (joined.member_id, joined.generation_id)
}

fn heartbeat(c: &mut Client, group: &str, (member, generation): &(StrBytes, i32)) -> i16 {
    let mut h = HeartbeatRequest::default();
    h.group_id = GroupId(s(group));
    h.member_id = member.clone();
    h.generation_id = *generation;
    c.call(&h, 3).error_code
}

/// What must keep answering while an fsync hangs: every call here reads its answer
/// with the client's deadline, so a stalled broker fails the test.
fn the_rest_still_answers(c: &mut Client, m: &(StrBytes, i32), while_what: &str) {
    let versions = c.call(&ApiVersionsRequest::default(), 3);
    assert_eq!(versions.error_code, 0, "{while_what}");
    let mut mt = MetadataRequestTopic::default();
    mt.name = Some(TopicName(s("data")));
    let mut meta = MetadataRequest::default();
    meta.topics = Some(vec![mt]);
    let meta = c.call(&meta, 9);
    assert_eq!(meta.topics[0].error_code, 0, "{while_what}");
    assert!(fetch(c, "data") > 0, "{while_what}");
    assert_eq!(offset_fetch(c, "readers", "data"), 1, "{while_what}");
    assert_eq!(heartbeat(c, "members", m), 0, "{while_what}");
}

#[test]
fn a_hanging_fsync_stalls_only_the_requests_that_wait_for_it() {
    let dir = TempDir::new("slow-disk");
    let b = SlowBroker::start(&dir.0);
    let mut c = Client::connect_to(b.broker.addr);
    let created = c.call(&create_topic_request("data"), 5);
    assert_eq!(created.topics[0].error_code, 0);
    let produced = c.call(&produce_request("data"), 9);
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    let committed = c.call(&commit_request("readers", "data"), 7);
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    let m = member(&mut c, "members");

    b.gate.set(true);
    // An offset commit hangs in its fsync...
    let mut committer = Client::connect_to(b.broker.addr);
    let commit_id = committer.send(&commit_request("writers", "data"), 7);
    b.gate.until_waiting(1, "the commit");
    the_rest_still_answers(&mut c, &m, "while a commit's fsync hangs");
    // ... and a produce, and a topic creation.
    let mut producer = Client::connect_to(b.broker.addr);
    let produce_id = producer.send(&produce_request("data"), 9);
    b.gate.until_waiting(2, "the produce");
    the_rest_still_answers(&mut c, &m, "while a produce's fsync hangs");
    let mut creator = Client::connect_to(b.broker.addr);
    let create_id = creator.send(&create_topic_request("more"), 5);
    b.gate.until_waiting(3, "the topic creation");
    the_rest_still_answers(&mut c, &m, "while a topic creation's fsync hangs");

    // Once the disk answers, so does everything that waited for it.
    b.gate.set(false);
    let r = committer.receive::<OffsetCommitRequest>(7, commit_id);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let r = producer.receive::<ProduceRequest>(9, produce_id);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    let r = creator.receive::<CreateTopicsRequest>(5, create_id);
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(offset_fetch(&mut c, "writers", "data"), 1);
    drop(b);
}
