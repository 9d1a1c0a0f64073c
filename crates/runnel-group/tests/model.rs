//! Random clients against the coordinator, under virtual time: whatever they do, every
//! parked request is answered exactly once, no answer goes to a request never made,
//! generations only grow while the group lives, a group is forgotten only with nothing
//! parked on it, and once every client falls silent the group empties and, after the
//! offsets retention, is forgotten.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use proptest::prelude::*;
use runnel_group::{
    Config, Coordinator, JoinRequest, MemberRef, Output, Protocol, ReplyTo, SyncRequest, Time,
};

#[derive(Clone, Debug)]
enum Op {
    Join {
        client: usize,
        fresh: bool,
        statik: bool,
    },
    Sync {
        client: usize,
    },
    Heartbeat {
        client: usize,
    },
    Leave {
        client: usize,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, any::<bool>(), any::<bool>()).prop_map(|(client, fresh, statik)| Op::Join {
            client,
            fresh,
            statik
        }),
        (0..4usize).prop_map(|client| Op::Sync { client }),
        (0..4usize).prop_map(|client| Op::Heartbeat { client }),
        (0..4usize).prop_map(|client| Op::Leave { client }),
        (0..12_000u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// What one client believes.
#[derive(Clone, Default)]
struct Client {
    member_id: String,
    generation: i32,
    leader: bool,
    peers: Vec<String>,
}

struct World {
    c: Coordinator,
    now: Time,
    next: u64,
    asked: HashSet<ReplyTo>,
    answered: HashSet<ReplyTo>,
    /// The client each open request came from.
    from: HashMap<ReplyTo, usize>,
    clients: Vec<Client>,
    generation_seen: i32,
}

impl World {
    fn deliver(&mut self, out: Vec<Output>) {
        for o in out {
            let to = match &o {
                Output::Join(r, _) | Output::Sync(r, _) => *r,
            };
            assert!(self.asked.contains(&to), "answer to a request never made");
            assert!(self.answered.insert(to), "request {to:?} answered twice");
            let client = self.from[&to];
            if let Output::Join(_, j) = o {
                let c = &mut self.clients[client];
                if !j.member_id.is_empty() {
                    c.member_id = j.member_id.clone();
                }
                if j.error.is_none() {
                    assert!(
                        j.generation_id >= self.generation_seen,
                        "generations only grow"
                    );
                    self.generation_seen = j.generation_id;
                    c.generation = j.generation_id;
                    c.leader = j.leader == j.member_id;
                    c.peers = j.members.iter().map(|m| m.member_id.clone()).collect();
                }
            }
        }
    }

    fn ask(&mut self, client: usize) -> ReplyTo {
        self.next += 1;
        let r = ReplyTo(self.next);
        self.asked.insert(r);
        self.from.insert(r, client);
        r
    }

    fn join(&mut self, client: usize, statik: bool) {
        let r = self.ask(client);
        let req = JoinRequest {
            group_id: "g".into(),
            member_id: self.clients[client].member_id.clone(),
            group_instance_id: statik.then(|| format!("instance-{client}")),
            client_id: format!("c{client}"),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 20_000,
            protocol_type: "consumer".into(),
            protocols: vec![Protocol {
                name: "range".into(),
                metadata: Bytes::new(),
            }],
            require_known_member_id: true,
        };
        let mut out = Vec::new();
        self.c.join(self.now, r, req, &mut out);
        self.deliver(out);
    }

    fn sync(&mut self, client: usize) {
        let c = self.clients[client].clone();
        let r = self.ask(client);
        let assignments = if c.leader {
            c.peers
                .iter()
                .map(|p| (p.clone(), Bytes::from(p.clone())))
                .collect()
        } else {
            Vec::new()
        };
        let req = SyncRequest {
            group_id: "g".into(),
            generation_id: c.generation,
            member_id: c.member_id,
            assignments,
            ..SyncRequest::default()
        };
        let mut out = Vec::new();
        self.c.sync(self.now, r, req, &mut out);
        self.deliver(out);
    }

    fn member(&self, client: usize) -> MemberRef {
        MemberRef {
            group_id: "g".into(),
            member_id: self.clients[client].member_id.clone(),
            group_instance_id: None,
            generation_id: self.clients[client].generation,
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now = Time(self.now.0 + ms);
        let mut out = Vec::new();
        let expired = self.c.tick(self.now, &mut out);
        self.deliver(out);
        if !expired.is_empty() {
            assert_eq!(expired, vec!["g".to_string()]);
            let open = self.asked.difference(&self.answered).count();
            assert_eq!(open, 0, "a group forgotten with requests parked on it");
            // A group made anew starts its generations over, as in Kafka.
            self.generation_seen = 0;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_parked_request_is_answered_once(ops in proptest::collection::vec(op(), 1..60)) {
        // A retention shorter than a few `Advance`s, so groups are forgotten and made
        // anew during a run.
        let config = Config {
            initial_rebalance_delay_ms: 500,
            offsets_retention_ms: 30_000,
            ..Config::default()
        };
        let mut w = World {
            c: Coordinator::new(config, 3),
            now: Time(0),
            next: 0,
            asked: HashSet::new(),
            answered: HashSet::new(),
            from: HashMap::new(),
            clients: vec![Client::default(); 4],
            generation_seen: 0,
        };
        for op in ops {
            match op {
                Op::Join { client, fresh, statik } => {
                    if fresh {
                        w.clients[client] = Client::default();
                    }
                    w.join(client, statik);
                }
                Op::Sync { client } => w.sync(client),
                Op::Heartbeat { client } => {
                    let m = w.member(client);
                    let _ = w.c.heartbeat(w.now, &m);
                }
                Op::Leave { client } => {
                    let id = w.clients[client].member_id.clone();
                    let mut out = Vec::new();
                    let _ = w.c.leave(w.now, "g", &[(id, None)], &mut out);
                    w.deliver(out);
                }
                Op::Advance { ms } => w.advance(ms),
            }
        }
        // Ten silent minutes, ticking every second as the broker does: every session
        // and rebalance ends, nothing stays parked.
        for _ in 0..600 {
            w.advance(1000);
        }
        let open: Vec<_> = w.asked.difference(&w.answered).collect();
        prop_assert!(open.is_empty(), "never answered: {open:?}");
        // Everyone has gone silent, so the group has emptied and, ten minutes being
        // far past the retention, been forgotten.
        prop_assert!(w.c.describe("g").is_none());
        prop_assert_eq!(w.c.next_deadline(), None);
    }
}
