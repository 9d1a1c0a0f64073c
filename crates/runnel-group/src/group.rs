//! One group: its members and Kafka's classic rebalance protocol (`ClassicGroup` and the
//! join, sync, heartbeat and leave handling of Kafka's `GroupCoordinator`).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::Config;
use crate::types::{
    GroupDescription, GroupError, GroupState, JoinRequest, JoinResponse, JoinedMember,
    MemberDescription, MemberRef, Output, Protocol, ReplyTo, SyncRequest, SyncResponse, Time,
};

#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    /// -1 from JoinGroup v0, which has none: the session timeout stands in.
    rebalance_timeout_ms: i32,
    protocols: Vec<Protocol>,
    assignment: Bytes,
    /// The member expires at this time unless it heartbeats (or is parked).
    heartbeat_deadline: Time,
    awaiting_join: Option<ReplyTo>,
    awaiting_sync: Option<ReplyTo>,
    /// Joined but not yet through a completed join; such a member's parked join is only
    /// trusted for `new_member_join_timeout_ms` (Kafka's NewMemberJoinTimeout).
    is_new: bool,
    joined_at: Time,
}

impl Member {
    fn rebalance_timeout_ms(&self) -> i32 {
        if self.rebalance_timeout_ms > 0 {
            self.rebalance_timeout_ms
        } else {
            self.session_timeout_ms
        }
    }

    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    /// When the member expires, if nothing happens before.
    fn expiry(&self, config: &Config) -> Time {
        if self.awaiting_join.is_some() || self.awaiting_sync.is_some() {
            // A parked member cannot heartbeat, so it counts as alive; a brand-new one
            // only for so long.
            if self.is_new && self.awaiting_join.is_some() {
                self.joined_at.plus_ms(config.new_member_join_timeout_ms)
            } else {
                Time(u64::MAX)
            }
        } else {
            self.heartbeat_deadline
        }
    }

    fn refresh(&mut self, now: Time) {
        self.heartbeat_deadline = now.plus_ms(i64::from(self.session_timeout_ms));
    }

    fn update_from(
        &mut self,
        now: Time,
        req: JoinRequest,
        reply_to: ReplyTo,
        out: &mut Vec<Output>,
    ) {
        self.client_id = req.client_id;
        self.client_host = req.client_host;
        self.session_timeout_ms = req.session_timeout_ms;
        self.rebalance_timeout_ms = req.rebalance_timeout_ms;
        self.protocols = req.protocols;
        self.park_join(reply_to, out);
        self.refresh(now);
    }

    /// Parks a JoinGroup. One the member sent before (a retry on a new connection, say)
    /// is answered rather than forgotten: Kafka drops it, which would leave its
    /// connection waiting.
    fn park_join(&mut self, reply_to: ReplyTo, out: &mut Vec<Output>) {
        if let Some(old) = self.awaiting_join.replace(reply_to) {
            let answer = JoinResponse::error(GroupError::RebalanceInProgress, &self.id);
            out.push(Output::Join(old, answer));
        }
    }

    /// Parks a SyncGroup; as with joins, an earlier one is answered.
    fn park_sync(&mut self, reply_to: ReplyTo, out: &mut Vec<Output>) {
        if let Some(old) = self.awaiting_sync.replace(reply_to) {
            let answer = SyncResponse::error(GroupError::RebalanceInProgress);
            out.push(Output::Sync(old, answer));
        }
    }
}

/// A rebalance under way: when it completes at the latest.
#[derive(Debug)]
struct Rebalance {
    deadline: Time,
    /// Set for the first rebalance of an empty group (`group.initial.rebalance.delay.ms`):
    /// it waits out the delay, extended while members keep arriving, up to this limit,
    /// and never completes early.
    initial_limit: Option<Time>,
}

/// One consumer group.
#[derive(Debug)]
pub(crate) struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    /// Ordered, so that responses and descriptions are deterministic.
    members: BTreeMap<String, Member>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, and when they lapse.
    pending: BTreeMap<String, Time>,
    /// KIP-345: `group.instance.id` to the member id that holds it.
    statics: HashMap<String, String>,
    rebalance: Option<Rebalance>,
    /// When the group last became Empty, or last had a commit allowed while Empty,
    /// whichever is later: its retention clock (KIP-211). Meaningless while it has
    /// members.
    empty_since: Time,
}

impl Group {
    /// A new, Empty group; its retention clock starts at `now`.
    pub(crate) fn new(id: &str, now: Time) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            statics: HashMap::new(),
            rebalance: None,
            empty_since: now,
        }
    }

    /// When the group is to be forgotten, if it stays as it is: `retention_ms` after it
    /// became empty. `None` while it has members or outstanding KIP-394 ids.
    pub(crate) fn expiry(&self, retention_ms: i64) -> Option<Time> {
        (self.state == GroupState::Empty && self.is_empty())
            .then(|| self.empty_since.plus_ms(retention_ms))
    }

    pub(crate) fn state(&self) -> GroupState {
        self.state
    }

    pub(crate) fn protocol_type(&self) -> &str {
        self.protocol_type.as_deref().unwrap_or("")
    }

    pub(crate) fn generation(&self) -> i32 {
        self.generation
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// Whether a member with this protocol type and these protocols may join.
    pub(crate) fn supports(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.state == GroupState::Empty {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|p| self.members.values().all(|m| m.supports(&p.name)))
    }

    /// A join from a member without an id; `new_id` is the id it gets.
    pub(crate) fn join_new(
        &mut self,
        now: Time,
        reply_to: ReplyTo,
        req: JoinRequest,
        new_id: String,
        config: &Config,
        out: &mut Vec<Output>,
    ) -> Result<(), GroupError> {
        if let Some(instance) = &req.group_instance_id
            && let Some(old_id) = self.statics.get(instance).cloned()
        {
            self.replace_static(now, reply_to, req, &old_id, new_id, config, out);
            return Ok(());
        }
        if req.require_known_member_id && req.group_instance_id.is_none() {
            if self.members.len() + self.pending.len() >= config.group_members_max {
                return Err(GroupError::GroupMaxSizeReached);
            }
            let expiry = now.plus_ms(i64::from(req.session_timeout_ms));
            self.pending.insert(new_id.clone(), expiry);
            let answer = JoinResponse::error(GroupError::MemberIdRequired, &new_id);
            out.push(Output::Join(reply_to, answer));
            return Ok(());
        }
        self.add_member(now, reply_to, req, new_id, config, out)
    }

    /// A join from a member that has an id.
    pub(crate) fn join_known(
        &mut self,
        now: Time,
        reply_to: ReplyTo,
        req: JoinRequest,
        config: &Config,
        out: &mut Vec<Output>,
    ) -> Result<(), GroupError> {
        let id = req.member_id.clone();
        if self.pending.remove(&id).is_some() {
            return self.add_member(now, reply_to, req, id, config, out);
        }
        self.check_member(&id, req.group_instance_id.as_deref())?;
        let member = self.members.get_mut(&id).expect("checked");
        match self.state {
            GroupState::PreparingRebalance => {
                member.update_from(now, req, reply_to, out);
                self.maybe_complete(now, out);
            }
            GroupState::CompletingRebalance if member.protocols == req.protocols => {
                member.refresh(now);
                out.push(Output::Join(reply_to, self.current_join_response(&id)));
            }
            GroupState::Stable
                if member.protocols == req.protocols && self.leader.as_ref() != Some(&id) =>
            {
                member.refresh(now);
                out.push(Output::Join(reply_to, self.current_join_response(&id)));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                // New protocols, or the leader asking for a rebalance (its subscription
                // or the topics' metadata changed).
                member.update_from(now, req, reply_to, out);
                self.prepare_rebalance(now, config, out);
            }
            GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMemberId),
        }
        Ok(())
    }

    /// KIP-345: a static member comes back under a new member id.
    #[allow(clippy::too_many_arguments)]
    fn replace_static(
        &mut self,
        now: Time,
        reply_to: ReplyTo,
        req: JoinRequest,
        old_id: &str,
        new_id: String,
        config: &Config,
        out: &mut Vec<Output>,
    ) {
        let mut member = self
            .members
            .remove(old_id)
            .expect("a static instance maps to a member");
        // The old incarnation, if it is still waiting somewhere, is fenced.
        if let Some(r) = member.awaiting_join.take() {
            out.push(Output::Join(
                r,
                JoinResponse::error(GroupError::FencedInstanceId, old_id),
            ));
        }
        if let Some(r) = member.awaiting_sync.take() {
            out.push(Output::Sync(
                r,
                SyncResponse::error(GroupError::FencedInstanceId),
            ));
        }
        let instance = req.group_instance_id.clone().expect("static");
        // Answer with the leader as it was: a returning static leader then sees itself
        // as a follower and takes its old assignment instead of assigning anew.
        let leader_before = self.leader.clone().unwrap_or_default();
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        let protocols_unchanged = member.protocols == req.protocols;
        member.id = new_id.clone();
        member.update_from(now, req, reply_to, out);
        self.statics.insert(instance, new_id.clone());
        self.members.insert(new_id.clone(), member);
        // Only a Stable group keeps going: during CompletingRebalance the leader's
        // assignment is still to come, keyed by the old member id (and a returning leader
        // would be told it is a follower and assign nothing), so Kafka rebalances.
        let no_rebalance = match self.state {
            GroupState::Stable => {
                protocols_unchanged || self.protocol_name == Some(self.select_protocol())
            }
            _ => false,
        };
        if no_rebalance {
            let member = self.members.get_mut(&new_id).expect("inserted");
            member.awaiting_join = None;
            let mut answer = self.current_join_response(&new_id);
            answer.leader = leader_before;
            answer.members.clear();
            out.push(Output::Join(reply_to, answer));
        } else if self.state == GroupState::PreparingRebalance {
            self.maybe_complete(now, out);
        } else {
            self.prepare_rebalance(now, config, out);
        }
    }

    fn add_member(
        &mut self,
        now: Time,
        reply_to: ReplyTo,
        req: JoinRequest,
        id: String,
        config: &Config,
        out: &mut Vec<Output>,
    ) -> Result<(), GroupError> {
        if self.members.len() >= config.group_members_max {
            return Err(GroupError::GroupMaxSizeReached);
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(instance) = &req.group_instance_id {
            self.statics.insert(instance.clone(), id.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        let member = Member {
            id: id.clone(),
            instance_id: req.group_instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocols: req.protocols,
            assignment: Bytes::new(),
            heartbeat_deadline: now.plus_ms(i64::from(req.session_timeout_ms)),
            awaiting_join: Some(reply_to),
            awaiting_sync: None,
            is_new: true,
            joined_at: now,
        };
        self.members.insert(id, member);
        if self.state == GroupState::PreparingRebalance {
            if let Some(r) = &mut self.rebalance
                && let Some(limit) = r.initial_limit
            {
                // Members keep arriving: wait one more delay, within the limit.
                r.deadline = now
                    .plus_ms(i64::from(config.initial_rebalance_delay_ms))
                    .min(limit);
            }
            self.maybe_complete(now, out);
        } else {
            self.prepare_rebalance(now, config, out);
        }
        Ok(())
    }

    /// The answer to a join that needs no rebalance.
    fn current_join_response(&self, member_id: &str) -> JoinResponse {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| JoinedMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    /// Starts a rebalance (`prepareRebalance`).
    fn prepare_rebalance(&mut self, now: Time, config: &Config, out: &mut Vec<Output>) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(r) = m.awaiting_sync.take() {
                    out.push(Output::Sync(
                        r,
                        SyncResponse::error(GroupError::RebalanceInProgress),
                    ));
                }
            }
        }
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        let timeout = self
            .members
            .values()
            .map(Member::rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.rebalance = Some(if was_empty {
            let delay = i64::from(config.initial_rebalance_delay_ms);
            Rebalance {
                deadline: now.plus_ms(delay),
                initial_limit: Some(now.plus_ms(delay.max(i64::from(timeout)))),
            }
        } else {
            Rebalance {
                deadline: now.plus_ms(i64::from(timeout)),
                initial_limit: None,
            }
        });
        self.maybe_complete(now, out);
    }

    /// Completes the rebalance if its time has come, or (after the initial delay) once
    /// every member has rejoined and no KIP-394 id is outstanding.
    fn maybe_complete(&mut self, now: Time, out: &mut Vec<Output>) {
        let Some(r) = &self.rebalance else { return };
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = r.initial_limit.is_none()
            && self.pending.is_empty()
            && self.members.values().all(|m| m.awaiting_join.is_some());
        if now >= r.deadline || all_joined {
            self.complete_join(now, out);
        }
    }

    /// `onCompleteJoin`: a new generation with the members that rejoined.
    fn complete_join(&mut self, now: Time, out: &mut Vec<Output>) {
        self.rebalance = None;
        // Dynamic members that did not rejoin are gone; static ones stay until their
        // session expires.
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id, out);
        }
        if self.members.is_empty() {
            self.generation += 1;
            self.state = GroupState::Empty;
            self.empty_since = now;
            self.protocol_name = None;
            self.leader = None;
            return;
        }
        let leader_rejoined = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_some_and(|m| m.awaiting_join.is_some());
        if !leader_rejoined {
            self.leader = self
                .members
                .values()
                .find(|m| m.awaiting_join.is_some())
                .or_else(|| self.members.values().next())
                .map(|m| m.id.clone());
        }
        self.protocol_name = Some(self.select_protocol());
        self.generation += 1;
        self.state = GroupState::CompletingRebalance;
        let leader = self.leader.clone().expect("chosen above");
        let protocol = self.protocol_name.clone().expect("selected above");
        let all: Vec<JoinedMember> = self
            .members
            .values()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect();
        for m in self.members.values_mut() {
            m.is_new = false;
            m.refresh(now);
            if let Some(r) = m.awaiting_join.take() {
                let members = if m.id == leader {
                    all.clone()
                } else {
                    Vec::new()
                };
                out.push(Output::Join(
                    r,
                    JoinResponse {
                        error: None,
                        generation_id: self.generation,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        leader: leader.clone(),
                        member_id: m.id.clone(),
                        members,
                    },
                ));
            }
        }
    }

    /// Each member votes for its most preferred protocol among those every member
    /// supports; most votes wins, ties go to the leader's preference.
    fn select_protocol(&self) -> String {
        let leader = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .or_else(|| self.members.values().next())
            .expect("a group with members");
        let candidates: Vec<&str> = leader
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.values().all(|m| m.supports(name)))
            .collect();
        let mut votes: Vec<usize> = vec![0; candidates.len()];
        for m in self.members.values() {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|p| candidates.iter().position(|c| *c == p.name))
            {
                votes[i] += 1;
            }
        }
        let best = votes
            .iter()
            .enumerate()
            .max_by(|(i, a), (j, b)| a.cmp(b).then(j.cmp(i)))
            .map(|(i, _)| i);
        match best {
            Some(i) => candidates[i].to_string(),
            None => leader
                .protocols
                .first()
                .map(|p| p.name.clone())
                .unwrap_or_default(),
        }
    }

    /// Checks that `member_id` is the member it claims to be: a static instance held by
    /// another member id is fenced (KIP-345), an id not in the group is unknown.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), GroupError> {
        if let Some(instance) = instance_id
            && let Some(holder) = self.statics.get(instance)
            && holder != member_id
        {
            return Err(GroupError::FencedInstanceId);
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(GroupError::UnknownMemberId)
        }
    }

    /// Checks a member's generation and state for SyncGroup, Heartbeat and OffsetCommit.
    fn check_generation(&self, r: &MemberRef) -> Result<(), GroupError> {
        self.check_member(&r.member_id, r.group_instance_id.as_deref())?;
        if r.generation_id != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    pub(crate) fn sync(
        &mut self,
        now: Time,
        reply_to: ReplyTo,
        req: SyncRequest,
        out: &mut Vec<Output>,
    ) -> Result<(), GroupError> {
        self.check_generation(&MemberRef {
            group_id: req.group_id.clone(),
            member_id: req.member_id.clone(),
            group_instance_id: req.group_instance_id.clone(),
            generation_id: req.generation_id,
        })?;
        let mismatch = |mine: &Option<String>, theirs: &Option<String>| {
            theirs.as_ref().is_some_and(|t| mine.as_ref() != Some(t))
        };
        if mismatch(&self.protocol_type, &req.protocol_type)
            || mismatch(&self.protocol_name, &req.protocol_name)
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Stable => {
                let member = self.members.get_mut(&req.member_id).expect("checked");
                member.refresh(now);
                let answer = self.sync_response(&req.member_id);
                out.push(Output::Sync(reply_to, answer));
                Ok(())
            }
            GroupState::CompletingRebalance => {
                let member = self.members.get_mut(&req.member_id).expect("checked");
                member.park_sync(reply_to, out);
                member.refresh(now);
                if self.leader.as_ref() == Some(&req.member_id) {
                    self.assign(req.assignments, now, out);
                }
                Ok(())
            }
        }
    }

    /// The leader's assignment arrives: every member gets its part, the group is Stable.
    fn assign(&mut self, assignments: Vec<(String, Bytes)>, now: Time, out: &mut Vec<Output>) {
        let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
        for m in self.members.values_mut() {
            m.assignment = given.remove(&m.id).unwrap_or_default();
        }
        self.state = GroupState::Stable;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let member = self.members.get_mut(&id).expect("listed");
            if let Some(r) = member.awaiting_sync.take() {
                member.refresh(now);
                let answer = self.sync_response(&id);
                out.push(Output::Sync(r, answer));
            }
        }
    }

    fn sync_response(&self, member_id: &str) -> SyncResponse {
        SyncResponse {
            error: None,
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
        }
    }

    pub(crate) fn heartbeat(&mut self, now: Time, r: &MemberRef) -> Result<(), GroupError> {
        self.check_generation(r)?;
        let member = self.members.get_mut(&r.member_id).expect("checked");
        match self.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                member.refresh(now);
                // This is how members learn that they must rejoin.
                Err(GroupError::RebalanceInProgress)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.refresh(now);
                Ok(())
            }
        }
    }

    /// Whether `r` may commit offsets now; a commit also counts as a heartbeat.
    pub(crate) fn commit_allowed(&mut self, now: Time, r: &MemberRef) -> Result<(), GroupError> {
        if r.generation_id < 0 && self.state == GroupState::Empty {
            // assign()-style commits, outside any generation. Kafka expires such a
            // consumer's offsets by commit time, so its commits keep the group.
            self.empty_since = self.empty_since.max(now);
            return Ok(());
        }
        self.check_generation(r)?;
        match self.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::CompletingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Stable | GroupState::PreparingRebalance => {
                let member = self.members.get_mut(&r.member_id).expect("checked");
                member.refresh(now);
                Ok(())
            }
        }
    }

    /// Removes one member (LeaveGroup v3+ names it by member id, instance id or both).
    pub(crate) fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Result<(), GroupError> {
        let id = match instance_id {
            Some(instance) => match self.statics.get(instance) {
                None => return Err(GroupError::UnknownMemberId),
                Some(holder) if !member_id.is_empty() && holder != member_id => {
                    return Err(GroupError::FencedInstanceId);
                }
                Some(holder) => holder.clone(),
            },
            None => {
                if self.pending.remove(member_id).is_some() {
                    return Ok(());
                }
                member_id.to_string()
            }
        };
        if !self.members.contains_key(&id) {
            return Err(GroupError::UnknownMemberId);
        }
        self.remove_member(&id, out);
        Ok(())
    }

    /// After members left or expired: rebalance, or finish the one under way.
    pub(crate) fn after_departures(&mut self, now: Time, config: &Config, out: &mut Vec<Output>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, config, out);
            }
            GroupState::PreparingRebalance => self.maybe_complete(now, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn remove_member(&mut self, id: &str, out: &mut Vec<Output>) {
        let Some(mut m) = self.members.remove(id) else {
            return;
        };
        if let Some(r) = m.awaiting_join.take() {
            out.push(Output::Join(
                r,
                JoinResponse::error(GroupError::UnknownMemberId, id),
            ));
        }
        if let Some(r) = m.awaiting_sync.take() {
            out.push(Output::Sync(
                r,
                SyncResponse::error(GroupError::UnknownMemberId),
            ));
        }
        if let Some(instance) = &m.instance_id
            && self.statics.get(instance).map(String::as_str) == Some(id)
        {
            self.statics.remove(instance);
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    /// Expires lapsed KIP-394 ids and members that stopped heartbeating, and completes a
    /// rebalance whose deadline passed.
    pub(crate) fn tick(&mut self, now: Time, config: &Config, out: &mut Vec<Output>) {
        let pending_before = self.pending.len();
        self.pending.retain(|_, expiry| *expiry > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.expiry(config) <= now)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id, out);
        }
        if !expired.is_empty() || self.pending.len() != pending_before {
            self.after_departures(now, config, out);
        }
        self.maybe_complete(now, out);
    }

    /// The next time `tick` has something to do.
    pub(crate) fn next_deadline(&self, config: &Config) -> Option<Time> {
        let members = self.members.values().map(|m| m.expiry(config));
        let pending = self.pending.values().copied();
        let rebalance = self.rebalance.as_ref().map(|r| r.deadline);
        members.chain(pending).chain(rebalance).min()
    }

    pub(crate) fn describe(&self) -> GroupDescription {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupDescription {
            group_id: self.id.clone(),
            state: self.state,
            protocol_type: self.protocol_type().to_string(),
            protocol_name: protocol.clone(),
            generation_id: self.generation,
            members: self
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}
