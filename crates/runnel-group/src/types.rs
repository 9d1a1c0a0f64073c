//! What goes in and out of the coordinator: requests, responses, errors, time.

use bytes::Bytes;

/// A point in time in milliseconds, on whatever monotonic clock the caller keeps. The
/// coordinator never reads a clock; tests drive it with virtual time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// `self` plus `ms` milliseconds (negative durations count as zero).
    #[must_use]
    pub fn plus_ms(self, ms: i64) -> Time {
        Time(self.0.saturating_add(ms.max(0) as u64))
    }
}

/// Identifies a request the caller is waiting to answer. The coordinator hands it back
/// with the response, possibly much later (a parked JoinGroup or SyncGroup).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyTo(pub u64);

/// The group states of Kafka's classic protocol (`ClassicGroupState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members; the group may still have committed offsets.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Why the coordinator refused a request. The broker maps each to its Kafka error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GroupError {
    /// The group id is empty.
    InvalidGroupId,
    /// The session timeout is outside the configured bounds.
    InvalidSessionTimeout,
    /// The member is not (or no longer) in the group.
    UnknownMemberId,
    /// The member's protocol type or protocols do not fit the group's.
    InconsistentGroupProtocol,
    /// KIP-394: rejoin with the member id in the response.
    MemberIdRequired,
    /// KIP-345: another member holds this `group.instance.id`.
    FencedInstanceId,
    /// The generation is not the group's current one.
    IllegalGeneration,
    /// A rebalance is under way: rejoin.
    RebalanceInProgress,
    /// The group has members and cannot be deleted.
    NonEmptyGroup,
    /// No such group.
    GroupIdNotFound,
    /// The group is full (`group_members_max`).
    GroupMaxSizeReached,
    /// There are too many groups (`groups_max`).
    CoordinatorNotAvailable,
}

/// One protocol a member supports (an assignor, for consumers), with its opaque metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    /// The protocol's name, such as `range` or `cooperative-sticky`.
    pub name: String,
    /// Opaque to the coordinator: the subscription, for consumers.
    pub metadata: Bytes,
}

/// A JoinGroup request.
#[derive(Clone, Debug, Default)]
pub struct JoinRequest {
    /// The group.
    pub group_id: String,
    /// Empty on a member's first join.
    pub member_id: String,
    /// KIP-345 static membership.
    pub group_instance_id: Option<String>,
    /// The client's `client.id`, which new member ids start with.
    pub client_id: String,
    /// The client's address, for DescribeGroups.
    pub client_host: String,
    /// How long the member may go without a heartbeat.
    pub session_timeout_ms: i32,
    /// How long a rebalance may wait for the member (JoinGroup v0 has none: -1).
    pub rebalance_timeout_ms: i32,
    /// `consumer` for consumers.
    pub protocol_type: String,
    /// The protocols, most preferred first.
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED (KIP-394).
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    /// The member's id.
    pub member_id: String,
    /// Its static instance id, if any.
    pub group_instance_id: Option<String>,
    /// Its metadata for the selected protocol.
    pub metadata: Bytes,
}

/// A JoinGroup response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinResponse {
    /// Why the join failed, if it did.
    pub error: Option<GroupError>,
    /// The generation the member joined.
    pub generation_id: i32,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The selected protocol.
    pub protocol_name: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// The member's id (new members learn theirs here).
    pub member_id: String,
    /// Every member, for the leader only; empty for followers.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    pub(crate) fn error(e: GroupError, member_id: &str) -> JoinResponse {
        JoinResponse {
            error: Some(e),
            generation_id: -1,
            member_id: member_id.to_string(),
            ..JoinResponse::default()
        }
    }
}

/// A SyncGroup request.
#[derive(Clone, Debug, Default)]
pub struct SyncRequest {
    /// The group.
    pub group_id: String,
    /// The generation the member joined.
    pub generation_id: i32,
    /// The member.
    pub member_id: String,
    /// Its static instance id, if any.
    pub group_instance_id: Option<String>,
    /// v5+: checked against the group's when set.
    pub protocol_type: Option<String>,
    /// v5+: checked against the group's when set.
    pub protocol_name: Option<String>,
    /// From the leader: each member's assignment. Empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncResponse {
    /// Why the sync failed, if it did.
    pub error: Option<GroupError>,
    /// The member's assignment.
    pub assignment: Bytes,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The group's selected protocol.
    pub protocol_name: Option<String>,
}

impl SyncResponse {
    pub(crate) fn error(e: GroupError) -> SyncResponse {
        SyncResponse {
            error: Some(e),
            ..SyncResponse::default()
        }
    }
}

/// A member's identity in Heartbeat, LeaveGroup and OffsetCommit.
#[derive(Clone, Debug, Default)]
pub struct MemberRef {
    /// The group.
    pub group_id: String,
    /// The member (may be empty in LeaveGroup v3+ when the instance id is given).
    pub member_id: String,
    /// Its static instance id, if any.
    pub group_instance_id: Option<String>,
    /// The generation it believes is current.
    pub generation_id: i32,
}

/// An answer the caller must deliver: to the request `ReplyTo` named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Answer a JoinGroup.
    Join(ReplyTo, JoinResponse),
    /// Answer a SyncGroup.
    Sync(ReplyTo, SyncResponse),
}

/// A member as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member's id.
    pub member_id: String,
    /// Its static instance id, if any.
    pub group_instance_id: Option<String>,
    /// Its `client.id`.
    pub client_id: String,
    /// Its address.
    pub client_host: String,
    /// Its metadata for the selected protocol (empty before one is selected).
    pub metadata: Bytes,
    /// Its current assignment.
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group.
    pub group_id: String,
    /// Its state.
    pub state: GroupState,
    /// Its protocol type (empty when it has none).
    pub protocol_type: String,
    /// Its selected protocol (empty unless Stable or completing).
    pub protocol_name: String,
    /// Its current generation.
    pub generation_id: i32,
    /// Its members.
    pub members: Vec<MemberDescription>,
}

/// A group as ListGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    /// The group.
    pub group_id: String,
    /// Its protocol type (empty when it has none).
    pub protocol_type: String,
    /// Its state.
    pub state: GroupState,
}
