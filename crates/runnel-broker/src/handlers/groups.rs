//! The group APIs: FindCoordinator (10), JoinGroup (11), Heartbeat (12), LeaveGroup (13),
//! SyncGroup (14), DescribeGroups (15), ListGroups (16) and DeleteGroups (42). They turn
//! wire structs into `runnel-group`'s and back; the protocol itself lives there.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as WireCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use runnel_group::{GroupState, MemberRef, Protocol};

use crate::broker::{Broker, node_id, str_bytes};
use crate::errors::{group_code, group_error};

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;

fn opt_str(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

fn group_id(s: &str) -> GroupId {
    GroupId(str_bytes(s))
}

impl Broker {
    pub(crate) fn find_coordinator(
        &self,
        req: FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        let refusal = |key_type: i8, key: &str| -> Option<ResponseError> {
            if key_type != KEY_TYPE_GROUP {
                // No transactions: clients fail fast instead of retrying.
                Some(ResponseError::CoordinatorNotAvailable)
            } else if key.is_empty() {
                Some(ResponseError::InvalidRequest)
            } else {
                None
            }
        };
        let mut resp = FindCoordinatorResponse::default();
        if version >= 4 {
            for key in &req.coordinator_keys {
                let mut c = WireCoordinator::default();
                c.key = key.clone();
                match refusal(req.key_type, key) {
                    None => {
                        c.node_id = node_id();
                        c.host = str_bytes(&self.node.host);
                        c.port = self.node.port;
                    }
                    Some(e) => {
                        c.node_id = kafka_protocol::messages::BrokerId(-1);
                        c.port = -1;
                        c.error_code = e.code();
                        c.error_message = Some(str_bytes(&format!("{e:?}")));
                    }
                }
                resp.coordinators.push(c);
            }
            return resp;
        }
        match refusal(req.key_type, &req.key) {
            None => {
                resp.node_id = node_id();
                resp.host = str_bytes(&self.node.host);
                resp.port = self.node.port;
            }
            Some(e) => {
                resp.error_code = e.code();
                resp.node_id = kafka_protocol::messages::BrokerId(-1);
                resp.port = -1;
            }
        }
        resp
    }

    pub(crate) async fn join_group(
        &self,
        req: JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> JoinGroupResponse {
        self.core.flows().joined(client_id, &req.group_id.0);
        let join = runnel_group::JoinRequest {
            group_id: req.group_id.0.to_string(),
            member_id: req.member_id.to_string(),
            group_instance_id: opt_str(&req.group_instance_id),
            client_id: client_id.to_string(),
            client_host: client_host.to_string(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .into_iter()
                .map(|p| Protocol {
                    name: p.name.to_string(),
                    // Copied: the group keeps it for its lifetime, and a slice would
                    // keep the whole request frame's buffer alive.
                    metadata: bytes::Bytes::copy_from_slice(&p.metadata),
                })
                .collect(),
            // KIP-394: from v4 a new member first learns its id.
            require_known_member_id: version >= 4,
        };
        let mut shutdown = self.shutdown.clone();
        let j = self.groups.join(join, &mut shutdown).await;
        let mut resp = JoinGroupResponse::default();
        resp.error_code = group_code(j.error);
        resp.generation_id = j.generation_id;
        resp.protocol_type = j.protocol_type.as_deref().map(str_bytes);
        // Before v7 the name is not nullable.
        resp.protocol_name = match j.protocol_name {
            Some(p) => Some(str_bytes(&p)),
            None if version < 7 => Some(StrBytes::default()),
            None => None,
        };
        resp.leader = str_bytes(&j.leader);
        resp.member_id = str_bytes(&j.member_id);
        resp.members = j
            .members
            .into_iter()
            .map(|m| {
                let mut w = JoinGroupResponseMember::default();
                w.member_id = str_bytes(&m.member_id);
                if version >= 5 {
                    w.group_instance_id = m.group_instance_id.as_deref().map(str_bytes);
                }
                w.metadata = m.metadata;
                w
            })
            .collect();
        resp
    }

    pub(crate) async fn sync_group(&self, req: SyncGroupRequest) -> SyncGroupResponse {
        let sync = runnel_group::SyncRequest {
            group_id: req.group_id.0.to_string(),
            generation_id: req.generation_id,
            member_id: req.member_id.to_string(),
            group_instance_id: opt_str(&req.group_instance_id),
            protocol_type: opt_str(&req.protocol_type),
            protocol_name: opt_str(&req.protocol_name),
            assignments: req
                .assignments
                .into_iter()
                .map(|a| {
                    (
                        a.member_id.to_string(),
                        bytes::Bytes::copy_from_slice(&a.assignment),
                    )
                })
                .collect(),
        };
        let mut shutdown = self.shutdown.clone();
        let s = self.groups.sync(sync, &mut shutdown).await;
        let mut resp = SyncGroupResponse::default();
        resp.error_code = group_code(s.error);
        resp.assignment = s.assignment;
        resp.protocol_type = s.protocol_type.as_deref().map(str_bytes);
        resp.protocol_name = s.protocol_name.as_deref().map(str_bytes);
        resp
    }

    pub(crate) fn heartbeat(&self, req: HeartbeatRequest) -> HeartbeatResponse {
        let member = MemberRef {
            group_id: req.group_id.0.to_string(),
            member_id: req.member_id.to_string(),
            group_instance_id: opt_str(&req.group_instance_id),
            generation_id: req.generation_id,
        };
        let result = self.groups.with(|c, now, _| c.heartbeat(now, &member));
        let mut resp = HeartbeatResponse::default();
        resp.error_code = group_code(result.err());
        resp
    }

    pub(crate) fn leave_group(&self, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let members: Vec<(String, Option<String>)> = if version >= 3 {
            req.members
                .iter()
                .map(|m| (m.member_id.to_string(), opt_str(&m.group_instance_id)))
                .collect()
        } else {
            vec![(req.member_id.to_string(), None)]
        };
        let group = req.group_id.0.to_string();
        let result = self
            .groups
            .with(|c, now, out| c.leave(now, &group, &members, out));
        let mut resp = LeaveGroupResponse::default();
        match result {
            Err(e) => resp.error_code = group_error(e).code(),
            Ok(results) if version >= 3 => {
                resp.members = members
                    .iter()
                    .zip(results)
                    .map(|((id, instance), r)| {
                        let mut m = MemberResponse::default();
                        m.member_id = str_bytes(id);
                        m.group_instance_id = instance.as_deref().map(str_bytes);
                        m.error_code = group_code(r.err());
                        m
                    })
                    .collect();
            }
            Ok(results) => resp.error_code = group_code(results[0].err()),
        }
        resp
    }

    pub(crate) fn describe_groups(
        &self,
        req: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        let mut resp = DescribeGroupsResponse::default();
        for g in &req.groups {
            let id = g.0.to_string();
            let mut d = DescribedGroup::default();
            d.group_id = g.clone();
            match self.groups.read(|c| c.describe(&id)) {
                // Up to v5 an unknown group is reported as Dead, without an error.
                None => {
                    d.group_state = str_bytes(GroupState::Dead.as_str());
                    if id.is_empty() {
                        d.error_code = ResponseError::InvalidGroupId.code();
                    }
                }
                Some(desc) => {
                    d.group_state = str_bytes(desc.state.as_str());
                    d.protocol_type = str_bytes(&desc.protocol_type);
                    d.protocol_data = str_bytes(&desc.protocol_name);
                    d.members = desc
                        .members
                        .into_iter()
                        .map(|m| {
                            let mut w = DescribedGroupMember::default();
                            w.member_id = str_bytes(&m.member_id);
                            if version >= 4 {
                                w.group_instance_id = m.group_instance_id.as_deref().map(str_bytes);
                            }
                            w.client_id = str_bytes(&m.client_id);
                            w.client_host = str_bytes(&m.client_host);
                            w.member_metadata = m.metadata;
                            w.member_assignment = m.assignment;
                            w
                        })
                        .collect();
                }
            }
            resp.groups.push(d);
        }
        resp
    }

    pub(crate) fn list_groups(&self, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        let states: Vec<GroupState> = req
            .states_filter
            .iter()
            .filter_map(|s| parse_state(s))
            .collect();
        let unknown_state = states.len() < req.states_filter.len();
        // Every group here is a classic group (KIP-848 groups do not exist).
        let classic = req.types_filter.is_empty()
            || req
                .types_filter
                .iter()
                .any(|t| t.eq_ignore_ascii_case("classic"));
        let mut resp = ListGroupsResponse::default();
        if unknown_state && states.is_empty() || !classic {
            return resp;
        }
        for l in self.groups.read(|c| c.list(&states)) {
            let mut g = ListedGroup::default();
            g.group_id = group_id(&l.group_id);
            g.protocol_type = str_bytes(&l.protocol_type);
            if version >= 4 {
                g.group_state = str_bytes(l.state.as_str());
            }
            if version >= 5 {
                g.group_type = str_bytes("classic");
            }
            resp.groups.push(g);
        }
        resp
    }

    pub(crate) async fn delete_groups(&self, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
        let mut resp = DeleteGroupsResponse::default();
        for g in req.groups_names {
            let id = g.0.to_string();
            let mut r = DeletableGroupResult::default();
            r.group_id = g;
            match self.groups.with(|c, _, _| c.delete(&id)) {
                Err(e) => r.error_code = group_error(e).code(),
                Ok(()) => {
                    let groups = self.groups.clone();
                    if let Err(e) = self
                        .blocking(move || groups.offsets.delete_group(&id))
                        .await
                    {
                        r.error_code = crate::errors::log_error(&e).code();
                    }
                }
            }
            resp.results.push(r);
        }
        resp
    }
}

fn parse_state(s: &str) -> Option<GroupState> {
    [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
    ]
    .into_iter()
    .find(|g| g.as_str().eq_ignore_ascii_case(s))
}
