//! InitProducerId and KIP-360 epoch bumps over raw frames (issue 11): only the holder of
//! an id's current epoch bumps it; an id never handed out is unknown; an id from before
//! a restart gets a new id, as Kafka answers InitProducerId without a transactional id.

mod common;

use common::raw::Client;
use common::{TempDir, TestBroker};
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

const INIT_PRODUCER_ID_V: i16 = 4;
const NONE: i16 = 0;
const INVALID_REQUEST: i16 = 42;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const UNKNOWN_PRODUCER_ID: i16 = 59;

fn init(c: &mut Client, producer_id: i64, epoch: i16) -> InitProducerIdResponse {
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = None;
    req.transaction_timeout_ms = 60_000;
    req.producer_id = ProducerId(producer_id);
    req.producer_epoch = epoch;
    c.call(&req, INIT_PRODUCER_ID_V)
}

fn granted(r: &InitProducerIdResponse) -> (i16, i64, i16) {
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

#[test]
fn kip_360_bump_only_for_the_holder_of_an_issued_ids_current_epoch() {
    let dir = TempDir::new("producer-ids");
    let broker = TestBroker::start(&dir.0);
    let mut c = Client::connect(&broker);

    let (code, pid, epoch) = granted(&init(&mut c, -1, -1));
    assert_eq!((code, epoch), (NONE, 0));
    let (_, other, _) = granted(&init(&mut c, -1, -1));
    assert_ne!(other, pid);

    // The holder bumps its epoch and keeps its id.
    assert_eq!(granted(&init(&mut c, pid, 0)), (NONE, pid, 1));
    assert_eq!(granted(&init(&mut c, pid, 1)), (NONE, pid, 2));
    // A retry of that bump, whose answer was lost, is answered the same.
    assert_eq!(granted(&init(&mut c, pid, 1)), (NONE, pid, 2));

    // An epoch the id does not hold: someone else's id, or a stale instance.
    for epoch in [0, 3, 500] {
        let r = init(&mut c, pid, epoch);
        assert_eq!(r.error_code, INVALID_PRODUCER_EPOCH, "epoch {epoch}: {r:?}");
    }
    // Ids the broker never handed out.
    for id in [other + 1, other + 5_000, i64::MAX, -7] {
        let r = init(&mut c, id, 0);
        assert_eq!(r.error_code, UNKNOWN_PRODUCER_ID, "id {id}: {r:?}");
    }
    // One of id and epoch without the other.
    assert_eq!(init(&mut c, pid, -1).error_code, INVALID_REQUEST);
    assert_eq!(init(&mut c, -1, 0).error_code, INVALID_REQUEST);
    // The refusals changed nothing: the holder still bumps.
    assert_eq!(granted(&init(&mut c, pid, 2)), (NONE, pid, 3));
    assert_eq!(granted(&init(&mut c, other, 0)), (NONE, other, 1));
    drop(c);
    broker.stop();

    // After a restart the epochs are not known: a bump gets a new id at epoch 0 (never
    // one handed out before), and made-up ids are still unknown.
    let broker = TestBroker::start(&dir.0);
    let mut c = Client::connect(&broker);
    let (code, fresh, epoch) = granted(&init(&mut c, pid, 3));
    assert_eq!((code, epoch), (NONE, 0));
    assert!(fresh > other, "{fresh} is new");
    assert_eq!(granted(&init(&mut c, fresh, 0)), (NONE, fresh, 1));
    assert_eq!(init(&mut c, fresh + 1, 0).error_code, UNKNOWN_PRODUCER_ID);
    drop(c);
    broker.stop();
}
