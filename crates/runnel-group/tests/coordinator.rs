//! The coordinator under virtual time: no sockets, no sleeps.

use std::collections::HashMap;

use bytes::Bytes;
use runnel_group::{
    Config, Coordinator, GroupError, GroupState, JoinRequest, JoinResponse, MemberRef, Output,
    Protocol, ReplyTo, SyncRequest, SyncResponse, Time,
};

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

/// A coordinator, a clock, and every answer it gave, by request.
struct Sim {
    c: Coordinator,
    now: Time,
    next: u64,
    answers: HashMap<ReplyTo, Output>,
    /// Groups `tick` forgot, in order.
    expired: Vec<String>,
}

impl Sim {
    fn new(initial_delay_ms: i32) -> Sim {
        Sim::with(Config {
            initial_rebalance_delay_ms: initial_delay_ms,
            ..Config::default()
        })
    }

    fn with(config: Config) -> Sim {
        Sim {
            c: Coordinator::new(config, 7),
            now: Time(1_000_000),
            next: 0,
            answers: HashMap::new(),
            expired: Vec::new(),
        }
    }

    fn collect(&mut self, out: Vec<Output>) {
        for o in out {
            let to = match &o {
                Output::Join(r, _) | Output::Sync(r, _) => *r,
            };
            assert!(
                self.answers.insert(to, o).is_none(),
                "request {to:?} answered twice"
            );
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now = Time(self.now.0 + ms);
        let mut out = Vec::new();
        let expired = self.c.tick(self.now, &mut out);
        self.expired.extend(expired);
        self.collect(out);
    }

    /// Sends a JoinGroup; returns its handle.
    fn join_with(&mut self, req: JoinRequest) -> ReplyTo {
        self.next += 1;
        let r = ReplyTo(self.next);
        let mut out = Vec::new();
        self.c.join(self.now, r, req, &mut out);
        self.collect(out);
        r
    }

    fn join(&mut self, member_id: &str) -> ReplyTo {
        self.join_with(join_request("g", member_id, &["range"]))
    }

    fn sync_with(&mut self, req: SyncRequest) -> ReplyTo {
        self.next += 1;
        let r = ReplyTo(self.next);
        let mut out = Vec::new();
        self.c.sync(self.now, r, req, &mut out);
        self.collect(out);
        r
    }

    fn sync(&mut self, member_id: &str, generation: i32, assignments: &[(&str, &str)]) -> ReplyTo {
        self.sync_with(SyncRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: member_id.into(),
            assignments: assignments
                .iter()
                .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
                .collect(),
            ..SyncRequest::default()
        })
    }

    fn joined(&self, r: ReplyTo) -> Option<&JoinResponse> {
        match self.answers.get(&r) {
            Some(Output::Join(_, j)) => Some(j),
            Some(other) => panic!("a join answered with {other:?}"),
            None => None,
        }
    }

    fn synced(&self, r: ReplyTo) -> Option<&SyncResponse> {
        match self.answers.get(&r) {
            Some(Output::Sync(_, s)) => Some(s),
            Some(other) => panic!("a sync answered with {other:?}"),
            None => None,
        }
    }

    fn heartbeat(&mut self, member_id: &str, generation: i32) -> Result<(), GroupError> {
        self.c
            .heartbeat(self.now, &member("g", member_id, generation))
    }

    /// A new member through KIP-394 (MEMBER_ID_REQUIRED, then the rejoin); returns its id
    /// and the handle of its parked (or answered) second join.
    fn new_member(&mut self) -> (String, ReplyTo) {
        let first = self.join("");
        let answer = self.joined(first).expect("answered at once").clone();
        assert_eq!(answer.error, Some(GroupError::MemberIdRequired));
        assert!(answer.member_id.starts_with("client-"));
        let second = self.join(&answer.member_id);
        (answer.member_id, second)
    }

    /// One member through join and sync to Stable in generation 1.
    fn stable_one(&mut self) -> String {
        let (a, ja) = self.new_member();
        let j = self
            .joined(ja)
            .expect("a lone member completes at once")
            .clone();
        assert_eq!(
            (j.error, j.generation_id, j.leader.as_str()),
            (None, 1, a.as_str())
        );
        let s = self.sync(&a, 1, &[(&a, "all")]);
        assert_eq!(self.synced(s).unwrap().assignment, Bytes::from("all"));
        a
    }
}

fn join_request(group: &str, member_id: &str, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        group_id: group.into(),
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| Protocol {
                name: p.to_string(),
                metadata: Bytes::from(format!("{p}-subscription")),
            })
            .collect(),
        require_known_member_id: true,
    }
}

fn member(group: &str, member_id: &str, generation: i32) -> MemberRef {
    MemberRef {
        group_id: group.into(),
        member_id: member_id.into(),
        group_instance_id: None,
        generation_id: generation,
    }
}

#[test]
fn kip_394_first_join_gets_member_id_required_then_completes() {
    let mut s = Sim::new(0);
    let a = s.stable_one();
    let d = s.c.describe("g").unwrap();
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.protocol_name, "range");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id, a);
    assert_eq!(d.members[0].metadata, Bytes::from("range-subscription"));
    assert_eq!(s.heartbeat(&a, 1), Ok(()));
}

#[test]
fn join_v3_adds_the_member_without_member_id_required() {
    let mut s = Sim::new(0);
    let mut req = join_request("g", "", &["range"]);
    req.require_known_member_id = false;
    let r = s.join_with(req);
    let j = s.joined(r).unwrap();
    assert_eq!(j.error, None);
    assert_eq!(j.generation_id, 1);
    assert_eq!(j.leader, j.member_id);
    assert_eq!(j.members.len(), 1);
}

#[test]
fn a_second_member_triggers_a_rebalance_the_first_learns_of_by_heartbeat() {
    let mut s = Sim::new(0);
    let a = s.stable_one();
    let (b, jb) = s.new_member();
    assert!(
        s.joined(jb).is_none(),
        "parked until the old member rejoins"
    );
    assert_eq!(
        s.c.describe("g").unwrap().state,
        GroupState::PreparingRebalance
    );
    assert_eq!(s.heartbeat(&a, 1), Err(GroupError::RebalanceInProgress));

    let ja = s.join(&a);
    let (la, lb) = (s.joined(ja).unwrap().clone(), s.joined(jb).unwrap().clone());
    assert_eq!((la.generation_id, lb.generation_id), (2, 2));
    assert_eq!(la.leader, a, "the leader keeps its role when it rejoins");
    assert_eq!(la.members.len(), 2, "the leader sees every member");
    assert!(lb.members.is_empty(), "followers see none");

    // The follower's sync waits for the leader's assignment.
    let sb = s.sync(&b, 2, &[]);
    assert!(s.synced(sb).is_none());
    assert_eq!(
        s.heartbeat(&b, 2),
        Ok(()),
        "heartbeats are fine while completing"
    );
    let sa = s.sync(&a, 2, &[(&a, "p0,p1"), (&b, "p2,p3")]);
    assert_eq!(s.synced(sa).unwrap().assignment, Bytes::from("p0,p1"));
    assert_eq!(s.synced(sb).unwrap().assignment, Bytes::from("p2,p3"));
    assert_eq!(
        s.synced(sb).unwrap().protocol_name.as_deref(),
        Some("range")
    );
    assert_eq!(s.c.describe("g").unwrap().state, GroupState::Stable);
}

#[test]
fn initial_delay_waits_and_extends_while_members_arrive() {
    let mut s = Sim::new(3_000);
    let (_, ja) = s.new_member();
    s.advance(2_000);
    let (_, jb) = s.new_member();
    s.advance(2_999);
    assert!(
        s.joined(ja).is_none() && s.joined(jb).is_none(),
        "extended by one delay"
    );
    s.advance(1);
    let (la, lb) = (s.joined(ja).unwrap(), s.joined(jb).unwrap());
    assert_eq!((la.generation_id, lb.generation_id), (1, 1));
    assert_eq!(la.leader, lb.leader);
}

#[test]
fn initial_delay_never_passes_the_rebalance_timeout() {
    let mut s = Sim::new(3_000);
    let (_, first) = s.new_member();
    // Members keep arriving every 2 s: the join still completes at the rebalance
    // timeout (30 s) after it started.
    for _ in 0..14 {
        s.advance(2_000);
        s.new_member();
    }
    assert!(s.joined(first).is_none());
    s.advance(2_000);
    assert_eq!(s.joined(first).unwrap().generation_id, 1);
}

#[test]
fn a_member_that_stops_heartbeating_expires_after_its_session() {
    let mut s = Sim::new(0);
    let a = s.stable_one();
    let (b, _) = s.new_member();
    let ja = s.join(&a);
    let leader = s.joined(ja).unwrap().clone();
    s.sync(&b, 2, &[]);
    s.sync(&a, 2, &[(&a, "x"), (&b, "y")]);
    assert_eq!(leader.members.len(), 2);

    // a keeps heartbeating, b goes silent.
    for _ in 0..4 {
        s.advance(2_500);
        if s.heartbeat(&a, 2).is_err() {
            break;
        }
    }
    assert_eq!(s.heartbeat(&a, 2), Err(GroupError::RebalanceInProgress));
    assert_eq!(s.heartbeat(&b, 2), Err(GroupError::UnknownMemberId));
    let ja = s.join(&a);
    let j = s.joined(ja).unwrap();
    assert_eq!(
        j.generation_id, 3,
        "completes at once: every member has rejoined"
    );
    assert_eq!(j.members.len(), 1);
}

#[test]
fn leave_rebalances_the_survivors_at_once() {
    let mut s = Sim::new(0);
    let a = s.stable_one();
    let (b, _) = s.new_member();
    let ja = s.join(&a);
    assert_eq!(s.joined(ja).unwrap().generation_id, 2);
    s.sync(&a, 2, &[(&a, "x"), (&b, "y")]);

    let mut out = Vec::new();
    let results =
        s.c.leave(
            s.now,
            "g",
            &[(b.clone(), None), ("nobody".into(), None)],
            &mut out,
        )
        .unwrap();
    s.collect(out);
    assert_eq!(results, vec![Ok(()), Err(GroupError::UnknownMemberId)]);
    assert_eq!(s.heartbeat(&a, 2), Err(GroupError::RebalanceInProgress));
    let ja = s.join(&a);
    assert_eq!(s.joined(ja).unwrap().generation_id, 3);

    // The last member leaving empties the group.
    let mut out = Vec::new();
    s.c.leave(s.now, "g", &[(a.clone(), None)], &mut out)
        .unwrap();
    assert_eq!(s.c.describe("g").unwrap().state, GroupState::Empty);
}

#[test]
fn a_slow_member_is_dropped_at_the_rebalance_timeout() {
    let mut s = Sim::new(0);
    let a = s.stable_one();
    let (b, _) = s.new_member();
    let ja = s.join(&a);
    s.sync(&a, 2, &[(&a, "x"), (&b, "y")]);
    assert_eq!(s.joined(ja).unwrap().generation_id, 2);
    // A third member arrives; a rejoins, b keeps heartbeating but never rejoins.
    let (_, jc) = s.new_member();
    let ja = s.join(&a);
    for _ in 0..11 {
        s.advance(2_500);
        let _ = s.heartbeat(&b, 2);
    }
    assert!(s.joined(jc).is_none());
    s.advance(2_500);
    let j = s.joined(ja).expect("completed at the rebalance timeout");
    assert_eq!(j.generation_id, 3);
    assert_eq!(j.members.len(), 2, "b is gone");
    assert_eq!(s.heartbeat(&b, 2), Err(GroupError::UnknownMemberId));
}

fn static_join(instance: &str, member_id: &str) -> JoinRequest {
    let mut req = join_request("g", member_id, &["range"]);
    req.group_instance_id = Some(instance.into());
    req
}

#[test]
fn kip_345_a_static_member_returns_without_a_rebalance_and_its_old_self_is_fenced() {
    let mut s = Sim::new(0);
    let ra = s.join_with(static_join("ia", ""));
    let a = s.joined(ra).unwrap().member_id.clone();
    assert!(
        a.starts_with("ia-"),
        "static ids start with the instance id"
    );
    let rb = s.join_with(static_join("ib", ""));
    let ja = s.join_with(static_join("ia", &a));
    let b = s.joined(rb).unwrap().member_id.clone();
    assert_eq!(s.joined(ja).unwrap().generation_id, 2);
    s.sync(&b, 2, &[]);
    s.sync(&a, 2, &[(&a, "x"), (&b, "y")]);

    // b restarts: a new member id, same instance, within the session.
    let rb2 = s.join_with(static_join("ib", ""));
    let j = s.joined(rb2).unwrap().clone();
    assert_eq!(j.error, None);
    assert_eq!(j.generation_id, 2, "no rebalance");
    assert_ne!(j.member_id, b);
    assert_eq!(s.heartbeat(&a, 2), Ok(()), "the others are undisturbed");
    let mut old = member("g", &b, 2);
    old.group_instance_id = Some("ib".into());
    assert_eq!(
        s.c.heartbeat(s.now, &old),
        Err(GroupError::FencedInstanceId)
    );
    let sb = s.sync(&j.member_id, 2, &[]);
    assert_eq!(
        s.synced(sb).unwrap().assignment,
        Bytes::from("y"),
        "its old assignment"
    );
    assert_eq!(s.c.describe("g").unwrap().state, GroupState::Stable);
}

#[test]
fn kip_345_a_static_leader_returning_is_told_the_old_leader_id() {
    let mut s = Sim::new(0);
    let ra = s.join_with(static_join("ia", ""));
    let a = s.joined(ra).unwrap().member_id.clone();
    s.sync(&a, 1, &[(&a, "x")]);
    let ra2 = s.join_with(static_join("ia", ""));
    let j = s.joined(ra2).unwrap();
    assert_eq!(
        j.leader, a,
        "it sees itself as a follower and keeps its assignment"
    );
    assert_ne!(j.member_id, a);
    assert!(j.members.is_empty());
}

#[test]
fn static_members_that_do_not_rejoin_stay_until_their_session_ends() {
    let mut s = Sim::new(0);
    let ra = s.join_with(static_join("ia", ""));
    let a = s.joined(ra).unwrap().member_id.clone();
    s.sync(&a, 1, &[(&a, "x")]);
    let (_, jd) = s.new_member();
    // a (static) neither heartbeats nor rejoins: it expires at its session timeout,
    // after which the rebalance completes with the dynamic member alone.
    s.advance(SESSION_MS as u64);
    let j = s
        .joined(jd)
        .expect("completed once the static member expired");
    assert_eq!(j.members.len(), 1);
}

#[test]
fn protocol_checks_refuse_a_member_that_does_not_fit() {
    let mut s = Sim::new(0);
    s.stable_one();
    let mut other_type = join_request("g", "", &["range"]);
    other_type.protocol_type = "connect".into();
    let r = s.join_with(other_type);
    assert_eq!(
        s.joined(r).unwrap().error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let r = s.join_with(join_request("g", "", &["roundrobin"]));
    assert_eq!(
        s.joined(r).unwrap().error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let mut empty = join_request("h", "", &[]);
    empty.require_known_member_id = false;
    let r = s.join_with(empty);
    assert_eq!(
        s.joined(r).unwrap().error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    assert!(
        s.c.describe("h").is_none(),
        "a refused first join leaves no group"
    );
}

#[test]
fn the_members_vote_on_the_protocol() {
    let mut s = Sim::new(0);
    let mut reqs = vec![
        join_request("g", "", &["range", "roundrobin"]),
        join_request("g", "", &["roundrobin", "range"]),
        join_request("g", "", &["roundrobin", "range", "sticky"]),
    ];
    for r in &mut reqs {
        r.require_known_member_id = false;
    }
    let handles: Vec<ReplyTo> = reqs.into_iter().map(|r| s.join_with(r)).collect();
    // The first completed a generation alone; the others joined a rebalance that
    // waits for it to rejoin.
    let first = s.joined(handles[0]).unwrap().member_id.clone();
    let rejoin = s.join_with({
        let mut r = join_request("g", &first, &["range", "roundrobin"]);
        r.require_known_member_id = false;
        r
    });
    let j = s.joined(rejoin).unwrap();
    assert_eq!(
        j.protocol_name.as_deref(),
        Some("roundrobin"),
        "two votes to one"
    );
    assert_eq!(j.members.len(), 3);
}

#[test]
fn bad_requests_get_the_right_errors() {
    let mut s = Sim::new(0);
    let r = s.join_with(join_request("", "", &["range"]));
    assert_eq!(s.joined(r).unwrap().error, Some(GroupError::InvalidGroupId));
    let mut short = join_request("g", "", &["range"]);
    short.session_timeout_ms = 1_000;
    let r = s.join_with(short);
    assert_eq!(
        s.joined(r).unwrap().error,
        Some(GroupError::InvalidSessionTimeout)
    );
    let r = s.join("somebody");
    assert_eq!(
        s.joined(r).unwrap().error,
        Some(GroupError::UnknownMemberId)
    );

    let a = s.stable_one();
    assert_eq!(s.heartbeat(&a, 7), Err(GroupError::IllegalGeneration));
    assert_eq!(s.heartbeat("ghost", 1), Err(GroupError::UnknownMemberId));
    let r = s.sync("ghost", 1, &[]);
    assert_eq!(
        s.synced(r).unwrap().error,
        Some(GroupError::UnknownMemberId)
    );
    let r = s.sync(&a, 9, &[]);
    assert_eq!(
        s.synced(r).unwrap().error,
        Some(GroupError::IllegalGeneration)
    );
    let r = s.sync_with(SyncRequest {
        group_id: "g".into(),
        generation_id: 1,
        member_id: a.clone(),
        protocol_name: Some("sticky".into()),
        ..SyncRequest::default()
    });
    assert_eq!(
        s.synced(r).unwrap().error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    s.new_member();
    let r = s.sync(&a, 1, &[]);
    assert_eq!(
        s.synced(r).unwrap().error,
        Some(GroupError::RebalanceInProgress)
    );
    assert_eq!(
        s.c.heartbeat(s.now, &member("", &a, 1)),
        Err(GroupError::InvalidGroupId)
    );
    assert_eq!(
        s.c.heartbeat(s.now, &member("nope", &a, 1)),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn commits_follow_kafkas_rules() {
    let mut s = Sim::new(0);
    // assign()-style commits create an empty group.
    assert_eq!(s.c.commit_allowed(s.now, &member("simple", "", -1)), Ok(()));
    assert_eq!(s.c.describe("simple").unwrap().state, GroupState::Empty);
    assert_eq!(
        s.c.commit_allowed(s.now, &member("missing", "m", 3)),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        s.c.commit_allowed(s.now, &member("", "", -1)),
        Err(GroupError::InvalidGroupId)
    );

    let a = s.stable_one();
    assert_eq!(s.c.commit_allowed(s.now, &member("g", &a, 1)), Ok(()));
    assert_eq!(
        s.c.commit_allowed(s.now, &member("g", &a, 0)),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        s.c.commit_allowed(s.now, &member("g", "ghost", 1)),
        Err(GroupError::UnknownMemberId)
    );
    // During PreparingRebalance the current generation may still commit...
    let (b, _) = s.new_member();
    assert_eq!(s.c.commit_allowed(s.now, &member("g", &a, 1)), Ok(()));
    // ...but not while the new generation completes.
    s.join(&a);
    assert_eq!(
        s.c.commit_allowed(s.now, &member("g", &b, 2)),
        Err(GroupError::RebalanceInProgress)
    );
}

#[test]
fn delete_list_and_describe() {
    let mut s = Sim::new(0);
    let a = s.stable_one();
    s.c.ensure_group("offsets-only", s.now).unwrap();
    assert_eq!(s.c.delete("g"), Err(GroupError::NonEmptyGroup));
    assert_eq!(s.c.delete("nope"), Err(GroupError::GroupIdNotFound));
    let listed: Vec<(String, GroupState)> =
        s.c.list(&[])
            .into_iter()
            .map(|l| (l.group_id, l.state))
            .collect();
    assert_eq!(
        listed,
        vec![
            ("g".to_string(), GroupState::Stable),
            ("offsets-only".to_string(), GroupState::Empty)
        ]
    );
    assert_eq!(s.c.list(&[GroupState::Empty]).len(), 1);
    assert_eq!(s.c.list(&[GroupState::Empty])[0].protocol_type, "");
    let d = s.c.describe("g").unwrap();
    assert_eq!(d.members[0].assignment, Bytes::from("all"));
    assert_eq!(d.members[0].client_id, "client");
    assert_eq!(s.c.delete("offsets-only"), Ok(()));
    let mut out = Vec::new();
    s.c.leave(s.now, "g", &[(a, None)], &mut out).unwrap();
    assert_eq!(s.c.delete("g"), Ok(()));
    assert!(s.c.list(&[]).is_empty());
}

#[test]
fn pending_member_ids_lapse_after_the_session_timeout() {
    let mut s = Sim::new(0);
    let first = s.join("");
    let id = s.joined(first).unwrap().member_id.clone();
    assert!(s.c.next_deadline().is_some());
    s.advance(SESSION_MS as u64);
    let r = s.join(&id);
    assert_eq!(
        s.joined(r).unwrap().error,
        Some(GroupError::UnknownMemberId)
    );
}

#[test]
fn limits_hold() {
    let config = Config {
        initial_rebalance_delay_ms: 0,
        group_members_max: 2,
        groups_max: 2,
        ..Config::default()
    };
    let mut c = Coordinator::new(config, 1);
    let mut out = Vec::new();
    for (i, g) in ["a", "b", "c"].iter().enumerate() {
        c.join(
            Time(0),
            ReplyTo(i as u64),
            join_request(g, "", &["range"]),
            &mut out,
        );
    }
    assert_eq!(
        join_errors(&out),
        vec![
            Some(GroupError::MemberIdRequired),
            Some(GroupError::MemberIdRequired),
            Some(GroupError::CoordinatorNotAvailable)
        ]
    );
    // Group "a" holds one outstanding KIP-394 id already: room for one more.
    out.clear();
    for i in 10..13 {
        c.join(
            Time(0),
            ReplyTo(i),
            join_request("a", "", &["range"]),
            &mut out,
        );
    }
    assert_eq!(
        join_errors(&out),
        vec![
            Some(GroupError::MemberIdRequired),
            Some(GroupError::GroupMaxSizeReached),
            Some(GroupError::GroupMaxSizeReached)
        ]
    );
}

fn join_errors(out: &[Output]) -> Vec<Option<GroupError>> {
    out.iter()
        .map(|o| match o {
            Output::Join(_, j) => j.error,
            Output::Sync(..) => None,
        })
        .collect()
}

#[test]
fn kip_345_a_static_member_returning_while_the_leader_assigns_causes_a_rebalance() {
    let mut s = Sim::new(0);
    let ra = s.join_with(static_join("ia", ""));
    let a = s.joined(ra).unwrap().member_id.clone();
    s.sync(&a, 1, &[(&a, "x")]);
    let rb = s.join_with(static_join("ib", ""));
    let ja = s.join_with(static_join("ia", &a));
    let b = s.joined(rb).unwrap().member_id.clone();
    assert_eq!(s.joined(ja).unwrap().generation_id, 2);
    // Generation 2 is completing: b waits for the leader's assignment...
    let sb = s.sync(&b, 2, &[]);
    // ...when b restarts under a new member id. Its parked sync is answered, and the
    // group rebalances rather than hand out assignments keyed by the old id.
    let rb2 = s.join_with(static_join("ib", ""));
    assert!(
        s.synced(sb).is_some(),
        "the old incarnation's sync is answered"
    );
    assert_eq!(
        s.c.describe("g").unwrap().state,
        GroupState::PreparingRebalance
    );
    let ja = s.join_with(static_join("ia", &a));
    let (la, lb) = (
        s.joined(ja).unwrap().clone(),
        s.joined(rb2).unwrap().clone(),
    );
    assert_eq!((la.generation_id, lb.generation_id), (3, 3));
    let b2 = lb.member_id.clone();
    s.sync(&b2, 3, &[]);
    let sa = s.sync(&a, 3, &[(&a, "x"), (&b2, "y")]);
    assert_eq!(s.synced(sa).unwrap().assignment, Bytes::from("x"));
    assert_eq!(s.c.describe("g").unwrap().state, GroupState::Stable);
}

// ---------------------------------------------------------------------------------------
// offsets.retention.minutes (issue 11: groups that are never forgotten)
// ---------------------------------------------------------------------------------------

const RETENTION_MS: i64 = 600_000;

fn retention_sim() -> Sim {
    Sim::with(Config {
        initial_rebalance_delay_ms: 0,
        offsets_retention_ms: RETENTION_MS,
        ..Config::default()
    })
}

/// KIP-211: the retention clock starts when the last member leaves, not at the last
/// commit, and the coordinator names the group so its offsets can go.
#[test]
fn kip_211_an_empty_group_is_forgotten_retention_after_its_last_member_left() {
    let mut s = retention_sim();
    let a = s.stable_one();
    assert_eq!(s.c.commit_allowed(s.now, &member("g", &a, 1)), Ok(()));
    // Members keep it alive far beyond the retention.
    for _ in 0..(RETENTION_MS as u64 * 2 / 5_000) {
        s.advance(5_000);
        assert_eq!(s.heartbeat(&a, 1), Ok(()));
    }
    assert!(s.expired.is_empty());
    let mut out = Vec::new();
    let left = s.c.leave(s.now, "g", &[(a, None)], &mut out).unwrap();
    assert_eq!(left, vec![Ok(())]);
    assert_eq!(s.c.state("g"), Some(GroupState::Empty));
    assert_eq!(s.c.next_deadline(), Some(s.now.plus_ms(RETENTION_MS)));

    s.advance(RETENTION_MS as u64 - 1);
    assert_eq!(s.c.state("g"), Some(GroupState::Empty));
    assert!(s.expired.is_empty());
    s.advance(1);
    assert_eq!(s.expired, vec!["g".to_string()]);
    assert_eq!(s.c.state("g"), None);
    assert!(s.c.list(&[]).is_empty());
    assert_eq!(s.c.next_deadline(), None);
    // Named once only.
    s.advance(RETENTION_MS as u64);
    assert_eq!(s.expired.len(), 1);
}

/// A group known only by its committed offsets (after a restart) counts from its last
/// commit.
#[test]
fn a_group_known_only_by_offsets_expires_retention_after_its_last_commit() {
    let mut s = retention_sim();
    let committed_at = Time(s.now.0 - 400_000);
    s.c.ensure_group("offsets-only", committed_at).unwrap();
    // Ensuring an existing group leaves its clock alone.
    s.c.ensure_group("offsets-only", s.now).unwrap();
    s.c.ensure_group("recent", s.now).unwrap();
    s.advance(199_999);
    assert!(s.expired.is_empty());
    s.advance(1);
    assert_eq!(s.expired, vec!["offsets-only".to_string()]);
    assert_eq!(s.c.state("recent"), Some(GroupState::Empty));
    s.advance(RETENTION_MS as u64);
    assert_eq!(
        s.expired,
        vec!["offsets-only".to_string(), "recent".to_string()]
    );
}

/// A standalone consumer (commits outside any generation) keeps its group as long as it
/// commits, as Kafka keeps offsets by commit time for groups without a protocol.
#[test]
fn commits_to_an_empty_group_restart_its_retention_clock() {
    let mut s = retention_sim();
    let standalone = member("solo", "", -1);
    for _ in 0..5 {
        assert_eq!(s.c.commit_allowed(s.now, &standalone), Ok(()));
        s.advance(RETENTION_MS as u64 - 1);
    }
    assert!(s.expired.is_empty());
    s.advance(1);
    assert_eq!(s.expired, vec!["solo".to_string()]);
    // A commit after expiry makes it anew, with a fresh clock.
    assert_eq!(s.c.commit_allowed(s.now, &standalone), Ok(()));
    assert_eq!(s.c.state("solo"), Some(GroupState::Empty));
}

/// A group with members, or with a KIP-394 id outstanding, or in a rebalance, is never
/// forgotten, however long ago it was created.
#[test]
fn only_groups_with_nobody_in_them_expire() {
    let mut s = retention_sim();
    s.c.ensure_group("g", Time(0)).unwrap();
    // A first join to the long-idle group: MEMBER_ID_REQUIRED leaves a pending id.
    let first = s.join("");
    let id = s.joined(first).unwrap().member_id.clone();
    s.advance(1);
    assert!(s.expired.is_empty(), "a pending KIP-394 id keeps the group");
    let second = s.join(&id);
    assert_eq!(s.joined(second).unwrap().generation_id, 1);
    let sync = s.sync(&id, 1, &[(&id, "all")]);
    assert!(s.synced(sync).is_some());
    for _ in 0..200 {
        s.advance(5_000);
        assert_eq!(s.heartbeat(&id, 1), Ok(()));
    }
    assert!(s.expired.is_empty());
    // The member stops heartbeating: its session ends, then the retention runs.
    s.advance(SESSION_MS as u64);
    assert_eq!(s.c.state("g"), Some(GroupState::Empty));
    s.advance(RETENTION_MS as u64);
    assert_eq!(s.expired, vec!["g".to_string()]);
}
