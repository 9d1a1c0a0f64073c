//! # runnel-group: the consumer-group coordinator
//!
//! Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the
//! group checks of OffsetCommit) as a sans-IO state machine. The caller feeds in requests
//! together with the current [`Time`] and gets back [`Output`]s: answers to deliver,
//! possibly to requests parked long before. It calls [`Coordinator::tick`] when
//! [`Coordinator::next_deadline`] comes, which is how sessions expire and delayed
//! rebalances complete. Tests drive it with virtual time, without sockets or sleeps.
//!
//! What it implements, following Kafka's `GroupCoordinator`:
//! - the states Empty, PreparingRebalance, CompletingRebalance, Stable and Dead;
//! - KIP-394 member ids (MEMBER_ID_REQUIRED on a first JoinGroup v4+);
//! - KIP-345 static membership: a returning `group.instance.id` takes its place back
//!   without a rebalance when the group is Stable (during CompletingRebalance it
//!   rebalances, as Kafka does), and an old incarnation is fenced (FENCED_INSTANCE_ID);
//! - the initial rebalance delay of an empty group, extended while members arrive;
//! - rebalance and session timeouts; parked joins complete early once every member has
//!   rejoined;
//! - protocol type and protocol name checks (INCONSISTENT_GROUP_PROTOCOL) and the
//!   members' vote on the protocol;
//! - `offsets.retention.minutes` with KIP-211's clock: a group that has had no members
//!   for [`Config::offsets_retention_ms`] is forgotten, and [`Coordinator::tick`] names
//!   it so the caller deletes its committed offsets.
//!
//! ## Boundary
//!
//! No I/O, no clock, no threads, no Kafka wire types: requests and responses are this
//! crate's own structs and errors its own enum, which the broker maps to Kafka's codes.
//! Committed offsets are not kept here; the broker stores them and asks
//! [`Coordinator::commit_allowed`] whether a commit may proceed.
//!
//! ## Limits
//!
//! Groups are limited by [`Config::groups_max`], members (and KIP-394 ids outstanding)
//! per group by [`Config::group_members_max`]. Empty groups do not pile up: each is
//! forgotten [`Config::offsets_retention_ms`] after it became empty or last had a
//! commit allowed, whichever is later.

mod group;
mod types;

use std::collections::HashMap;

pub use types::{
    GroupDescription, GroupError, GroupListing, GroupState, JoinRequest, JoinResponse,
    JoinedMember, MemberDescription, MemberRef, Output, Protocol, ReplyTo, SyncRequest,
    SyncResponse, Time,
};

use group::Group;

/// The coordinator's settings, with Kafka's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `group.min.session.timeout.ms`: shorter sessions are refused.
    pub session_timeout_ms_min: i32,
    /// `group.max.session.timeout.ms`: longer sessions are refused.
    pub session_timeout_ms_max: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty
    /// group waits for more members (0 in tests).
    pub initial_rebalance_delay_ms: i32,
    /// How long a new member's parked JoinGroup keeps it alive (Kafka's
    /// NewMemberJoinTimeout).
    pub new_member_join_timeout_ms: i64,
    /// `group.max.size`: members (plus outstanding KIP-394 ids) per group.
    pub group_members_max: usize,
    /// Groups the coordinator keeps, including empty ones.
    pub groups_max: usize,
    /// Kafka's `offsets.retention.minutes`, in ms: a group that has had no members for
    /// this long (KIP-211: counted from when it became empty, or from its last commit
    /// if that is later) is forgotten, and its committed offsets with it.
    pub offsets_retention_ms: i64,
}

/// Kafka's `offsets.retention.minutes` default (7 days, since Kafka 2.0), in ms.
pub const OFFSETS_RETENTION_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;

impl Default for Config {
    fn default() -> Self {
        Config {
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            new_member_join_timeout_ms: 300_000,
            group_members_max: 1_000,
            groups_max: 10_000,
            offsets_retention_ms: OFFSETS_RETENTION_MS_DEFAULT,
        }
    }
}

/// Every group this broker coordinates.
#[derive(Debug)]
pub struct Coordinator {
    config: Config,
    groups: HashMap<String, Group>,
    /// Member ids are `<client id>-<16 bytes in hex>`, from a seeded generator so that
    /// tests are deterministic; the broker seeds it from the OS.
    seed: u64,
    ids_issued: u64,
}

impl Coordinator {
    /// A coordinator with no groups. `seed` makes member ids unique across restarts.
    #[must_use]
    pub fn new(config: Config, seed: u64) -> Coordinator {
        Coordinator {
            config,
            groups: HashMap::new(),
            seed,
            ids_issued: 0,
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// JoinGroup. The answer (now, or when the rebalance completes) and any answers to
    /// other parked requests go to `out`.
    pub fn join(&mut self, now: Time, reply_to: ReplyTo, req: JoinRequest, out: &mut Vec<Output>) {
        let member_id = req.member_id.clone();
        let group_id = req.group_id.clone();
        let created = !self.groups.contains_key(&group_id);
        if let Err(e) = self.try_join(now, reply_to, req, out) {
            if created && self.groups.get(&group_id).is_some_and(Group::is_empty) {
                self.groups.remove(&group_id);
            }
            out.push(Output::Join(reply_to, JoinResponse::error(e, &member_id)));
        }
    }

    fn try_join(
        &mut self,
        now: Time,
        reply_to: ReplyTo,
        req: JoinRequest,
        out: &mut Vec<Output>,
    ) -> Result<(), GroupError> {
        if req.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let range = self.config.session_timeout_ms_min..=self.config.session_timeout_ms_max;
        if !range.contains(&req.session_timeout_ms) {
            return Err(GroupError::InvalidSessionTimeout);
        }
        if !self.groups.contains_key(&req.group_id) {
            if !req.member_id.is_empty() {
                return Err(GroupError::UnknownMemberId);
            }
            self.create(&req.group_id, now)?;
        }
        let new_id = req.member_id.is_empty().then(|| {
            let prefix = req.group_instance_id.as_deref().unwrap_or(&req.client_id);
            self.new_member_id(prefix)
        });
        let config = &self.config;
        let group = self.groups.get_mut(&req.group_id).expect("present");
        if !group.supports(&req.protocol_type, &req.protocols) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        match new_id {
            Some(id) => group.join_new(now, reply_to, req, id, config, out),
            None => group.join_known(now, reply_to, req, config, out),
        }
    }

    /// SyncGroup. The answer (now, or once the leader's assignment arrives) and the
    /// other members' answers go to `out`.
    pub fn sync(&mut self, now: Time, reply_to: ReplyTo, req: SyncRequest, out: &mut Vec<Output>) {
        let result = match self.groups.get_mut(&req.group_id) {
            _ if req.group_id.is_empty() => Err(GroupError::InvalidGroupId),
            None => Err(GroupError::UnknownMemberId),
            Some(g) => g.sync(now, reply_to, req, out),
        };
        if let Err(e) = result {
            out.push(Output::Sync(reply_to, SyncResponse::error(e)));
        }
    }

    /// Heartbeat: `Err(RebalanceInProgress)` tells the member to rejoin.
    pub fn heartbeat(&mut self, now: Time, r: &MemberRef) -> Result<(), GroupError> {
        self.group_mut(&r.group_id)?.heartbeat(now, r)
    }

    /// LeaveGroup for several members (v3+; older versions name one). The per-member
    /// results follow the order of `members`; answers to parked requests go to `out`.
    pub fn leave(
        &mut self,
        now: Time,
        group_id: &str,
        members: &[(String, Option<String>)],
        out: &mut Vec<Output>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let config = &self.config;
        let group = match self.groups.get_mut(group_id) {
            _ if group_id.is_empty() => return Err(GroupError::InvalidGroupId),
            None => return Err(GroupError::UnknownMemberId),
            Some(g) => g,
        };
        let results: Vec<_> = members
            .iter()
            .map(|(id, instance)| group.leave(id, instance.as_deref(), out))
            .collect();
        if results.iter().any(Result::is_ok) {
            group.after_departures(now, config, out);
        }
        Ok(results)
    }

    /// Whether a member (or, with a negative generation, anyone, if the group has no
    /// members) may commit offsets for the group now. Creates the group if it does not
    /// exist and the commit is outside any generation, as Kafka does. A commit allowed
    /// to an empty group restarts its retention clock: Kafka expires a standalone
    /// consumer's offsets by their commit time, so a consumer that keeps committing
    /// keeps them.
    pub fn commit_allowed(&mut self, now: Time, r: &MemberRef) -> Result<(), GroupError> {
        if r.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if !self.groups.contains_key(&r.group_id) {
            if r.generation_id >= 0 {
                return Err(GroupError::IllegalGeneration);
            }
            self.create(&r.group_id, now)?;
        }
        self.group_mut(&r.group_id)?.commit_allowed(now, r)
    }

    /// Makes sure the group exists (Empty if new): for groups known only by their
    /// committed offsets, after a restart. `last_commit` is when the group last
    /// committed, on the caller's clock: a new group's retention counts from it, as
    /// Kafka counts it for offsets without group metadata. An existing group is left
    /// as it is.
    pub fn ensure_group(&mut self, group_id: &str, last_commit: Time) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if !self.groups.contains_key(group_id) {
            self.create(group_id, last_commit)?;
        }
        Ok(())
    }

    /// Deletes an empty group (DeleteGroups). The caller deletes its offsets.
    pub fn delete(&mut self, group_id: &str) -> Result<(), GroupError> {
        match self.groups.get(group_id) {
            _ if group_id.is_empty() => Err(GroupError::InvalidGroupId),
            None => Err(GroupError::GroupIdNotFound),
            Some(g) if g.state() != GroupState::Empty || !g.is_empty() => {
                Err(GroupError::NonEmptyGroup)
            }
            Some(_) => {
                self.groups.remove(group_id);
                Ok(())
            }
        }
    }

    /// Whether the group exists and has no members (OffsetDelete may then drop offsets
    /// of any topic).
    #[must_use]
    pub fn state(&self, group_id: &str) -> Option<GroupState> {
        self.groups.get(group_id).map(Group::state)
    }

    /// The generation and state of a group, for OffsetDelete and tools.
    #[must_use]
    pub fn generation(&self, group_id: &str) -> Option<i32> {
        self.groups.get(group_id).map(Group::generation)
    }

    /// DescribeGroups for one group; `None` if it does not exist.
    #[must_use]
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        self.groups.get(group_id).map(Group::describe)
    }

    /// ListGroups, sorted by id; `states` filters when not empty (ListGroups v4+).
    #[must_use]
    pub fn list(&self, states: &[GroupState]) -> Vec<GroupListing> {
        let mut all: Vec<GroupListing> = self
            .groups
            .iter()
            .filter(|(_, g)| states.is_empty() || states.contains(&g.state()))
            .map(|(id, g)| GroupListing {
                group_id: id.clone(),
                protocol_type: g.protocol_type().to_string(),
                state: g.state(),
            })
            .collect();
        all.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        all
    }

    /// Expires members and KIP-394 ids, completes rebalances whose time has come, and
    /// forgets groups that have been empty for [`Config::offsets_retention_ms`].
    ///
    /// Returns the groups it forgot, sorted: the caller deletes their committed
    /// offsets (Kafka's offset expiry, KIP-211). A forgotten group had no members and
    /// no outstanding KIP-394 ids, so no parked request is left behind.
    #[must_use = "the forgotten groups' committed offsets are the caller's to delete"]
    pub fn tick(&mut self, now: Time, out: &mut Vec<Output>) -> Vec<String> {
        for g in self.groups.values_mut() {
            g.tick(now, &self.config, out);
        }
        let retention_ms = self.config.offsets_retention_ms;
        let mut expired: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.expiry(retention_ms).is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        expired.sort();
        for id in &expired {
            let g = self.groups.remove(id).expect("listed above");
            assert!(g.is_empty(), "an expired group has no members");
        }
        expired
    }

    /// When [`Coordinator::tick`] next has work, if ever.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Time> {
        let retention_ms = self.config.offsets_retention_ms;
        self.groups
            .values()
            .filter_map(|g| {
                let work = g.next_deadline(&self.config);
                work.into_iter().chain(g.expiry(retention_ms)).min()
            })
            .min()
    }

    fn group_mut(&mut self, group_id: &str) -> Result<&mut Group, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        self.groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)
    }

    fn create(&mut self, group_id: &str, now: Time) -> Result<(), GroupError> {
        if self.groups.len() >= self.config.groups_max {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        self.groups
            .insert(group_id.to_string(), Group::new(group_id, now));
        Ok(())
    }

    fn new_member_id(&mut self, prefix: &str) -> String {
        self.ids_issued += 1;
        let hi = splitmix64(self.seed ^ self.ids_issued.rotate_left(17));
        let lo = splitmix64(hi ^ self.ids_issued);
        let hex = format!("{hi:016x}{lo:016x}");
        format!(
            "{prefix}-{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }
}

/// A well-mixed 64-bit function (SplitMix64's finalizer).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
