//! `runnel group list|describe|reset-offsets|delete`, after kafka-consumer-groups.

use std::collections::BTreeMap;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::groups::GroupInfo;
use rdkafka::{Offset, TopicPartitionList};

use super::{Connection, Failure, REQUEST_TIMEOUT, admin_options, partitions_of};

/// The group commands.
#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List groups with their state and member count.
    List,
    /// Show a group's members, their partitions, and committed offsets and lag.
    Describe {
        /// The group.
        group: String,
    },
    /// Move a group's committed offsets (a dry run unless --execute).
    #[command(after_help = "EXAMPLES:
    runnel group reset-offsets billing --topic orders --to-earliest            # show the plan
    runnel group reset-offsets billing --topic orders --to-earliest --execute  # apply it
    runnel group reset-offsets billing --topic orders --shift-by -10 --execute
    runnel group reset-offsets billing --topic orders --to-datetime 2026-11-23T08:00:00Z

The group must have no active members, as with Kafka: stop its consumers first.")]
    ResetOffsets(ResetArgs),
    /// Delete a group and its committed offsets (it must have no members).
    Delete {
        /// The group.
        group: String,
    },
}

/// Options of `runnel group reset-offsets`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"])))]
pub struct ResetArgs {
    /// The group.
    pub group: String,
    /// The topic whose offsets move (all its partitions).
    #[arg(long, short = 't')]
    pub topic: String,
    /// To the first offset still in the log.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the end: skip everything not yet read.
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset (clamped to what the log holds).
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// To the first record at or after this time (2026-11-23T08:00:00Z or @MILLIS).
    #[arg(long, value_name = "TIME")]
    pub to_datetime: Option<String>,
    /// Forward (positive) or back (negative) from the committed offset.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
    /// Apply the plan; without it nothing changes.
    #[arg(long)]
    pub execute: bool,
}

/// Runs a group command on a runtime of its own (admin requests are async).
pub fn run_blocking(conn: &Connection, cmd: GroupCommand) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::refused(format!("cannot start a runtime: {e}")))?;
    rt.block_on(run(conn, cmd))
}

/// Runs a group command.
pub async fn run(conn: &Connection, cmd: GroupCommand) -> Result<(), Failure> {
    match cmd {
        GroupCommand::List => list(conn),
        GroupCommand::Describe { group } => describe(conn, &group),
        GroupCommand::ResetOffsets(args) => reset(conn, &args),
        GroupCommand::Delete { group } => delete(conn, &group).await,
    }
}

fn group_info(
    conn: &Connection,
    consumer: &BaseConsumer,
    group: &str,
) -> Result<GroupSummary, Failure> {
    let list = consumer
        .fetch_group_list(Some(group), REQUEST_TIMEOUT)
        .map_err(|e| Failure::broker(conn, "cannot describe the group", e))?;
    let info = list
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .map(GroupSummary::of);
    Ok(info.unwrap_or(GroupSummary {
        state: "Dead".into(),
        protocol: String::new(),
        members: Vec::new(),
    }))
}

/// What `fetch_group_list` says of a group, owned.
struct GroupSummary {
    state: String,
    protocol: String,
    members: Vec<MemberSummary>,
}

/// Member id, client id, host, and assigned (topic, partition)s.
type MemberSummary = (String, String, String, Vec<(String, i32)>);

impl GroupSummary {
    fn of(g: &GroupInfo) -> GroupSummary {
        GroupSummary {
            state: g.state().to_string(),
            protocol: g.protocol().to_string(),
            members: g
                .members()
                .iter()
                .map(|m| {
                    (
                        m.id().to_string(),
                        m.client_id().to_string(),
                        m.client_host().to_string(),
                        m.assignment().map(decode_assignment).unwrap_or_default(),
                    )
                })
                .collect(),
        }
    }
}

fn list(conn: &Connection) -> Result<(), Failure> {
    let consumer = conn.consumer(None)?;
    let list = consumer
        .fetch_group_list(None, REQUEST_TIMEOUT)
        .map_err(|e| Failure::broker(conn, "cannot list groups", e))?;
    let mut groups: Vec<_> = list
        .groups()
        .iter()
        .map(|g| {
            (
                g.name().to_string(),
                g.state().to_string(),
                g.members().len(),
            )
        })
        .collect();
    groups.sort();
    println!("{:<40} {:<20} MEMBERS", "GROUP", "STATE");
    for (name, state, members) in groups {
        println!("{name:<40} {state:<20} {members}");
    }
    Ok(())
}

/// Every partition of every (non-internal) topic: where a group may have offsets.
fn all_partitions(conn: &Connection) -> Result<Vec<(String, i32)>, Failure> {
    let md = conn.metadata(None)?;
    let mut out = Vec::new();
    for t in md.topics() {
        if t.name().starts_with("__") {
            continue;
        }
        for p in t.partitions() {
            out.push((t.name().to_string(), p.id()));
        }
    }
    out.sort();
    Ok(out)
}

/// The group's committed offsets for `partitions` (absent where none).
fn committed(
    conn: &Connection,
    group: &str,
    partitions: &[(String, i32)],
) -> Result<BTreeMap<(String, i32), i64>, Failure> {
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let consumer = conn.consumer(Some(group))?;
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition(t, *p);
    }
    let got = consumer
        .committed_offsets(tpl, REQUEST_TIMEOUT)
        .map_err(|e| Failure::broker(conn, "cannot read committed offsets", e))?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

fn describe(conn: &Connection, group: &str) -> Result<(), Failure> {
    let consumer = conn.consumer(None)?;
    let info = group_info(conn, &consumer, group)?;
    let offsets = committed(conn, group, &all_partitions(conn)?)?;
    if info.state == "Dead" && info.members.is_empty() && offsets.is_empty() {
        return Err(Failure::not_found(format!(
            "group {group:?} does not exist (see `runnel group list`)"
        )));
    }
    println!(
        "group {group}: {}, {} member(s), protocol {}",
        info.state,
        info.members.len(),
        if info.protocol.is_empty() {
            "-"
        } else {
            &info.protocol
        }
    );
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for (id, client, host, assigned) in &info.members {
        println!("  member {id} (client {client}, host {host})");
        for tp in assigned {
            owner.insert(tp.clone(), id.clone());
        }
    }
    let mut rows: Vec<(String, i32)> = offsets.keys().cloned().collect();
    rows.extend(owner.keys().cloned());
    rows.sort();
    rows.dedup();
    println!(
        "{:<30} {:>9} {:>12} {:>12} {:>8}  MEMBER",
        "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"
    );
    for (topic, p) in rows {
        let (_, high) = consumer
            .fetch_watermarks(&topic, p, REQUEST_TIMEOUT)
            .map_err(|e| Failure::broker(conn, "cannot read offsets", e))?;
        let at = offsets.get(&(topic.clone(), p));
        let lag = at.map_or("-".to_string(), |c| (high - c).max(0).to_string());
        println!(
            "{:<30} {:>9} {:>12} {:>12} {:>8}  {}",
            topic,
            p,
            at.map_or("-".to_string(), i64::to_string),
            high,
            lag,
            owner.get(&(topic.clone(), p)).map_or("-", String::as_str)
        );
    }
    Ok(())
}

fn reset(conn: &Connection, args: &ResetArgs) -> Result<(), Failure> {
    let consumer = conn.consumer(None)?;
    let partitions = partitions_of(conn, &args.topic)?;
    let info = group_info(conn, &consumer, &args.group)?;
    if args.execute && !info.members.is_empty() {
        return Err(Failure::refused(format!(
            "group {:?} has {} active member(s): offsets can only be reset while it is inactive; stop its consumers first",
            args.group,
            info.members.len()
        )));
    }
    let tps: Vec<(String, i32)> = partitions
        .iter()
        .map(|p| (args.topic.clone(), *p))
        .collect();
    let current = committed(conn, &args.group, &tps)?;
    let by_time = match &args.to_datetime {
        None => None,
        Some(t) => {
            let ms = t
                .strip_prefix('@')
                .and_then(|m| m.parse().ok())
                .or_else(|| super::consume::parse_datetime(t))
                .ok_or_else(|| {
                    Failure::usage(format!(
                        "--to-datetime {t:?}: expected 2026-11-23T08:00:00Z or @MILLIS"
                    ))
                })?;
            let mut tpl = TopicPartitionList::new();
            for p in &partitions {
                tpl.add_partition_offset(&args.topic, *p, Offset::Offset(ms))
                    .map_err(|e| Failure::broker(conn, "bad time", e))?;
            }
            Some(
                consumer
                    .offsets_for_times(tpl, REQUEST_TIMEOUT)
                    .map_err(|e| Failure::broker(conn, "cannot look up offsets by time", e))?,
            )
        }
    };
    let mut plan = TopicPartitionList::new();
    println!(
        "{:<30} {:>9} {:>12} {:>12}",
        "TOPIC", "PARTITION", "CURRENT", "NEW"
    );
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&args.topic, *p, REQUEST_TIMEOUT)
            .map_err(|e| Failure::broker(conn, "cannot read offsets", e))?;
        let now = current.get(&(args.topic.clone(), *p)).copied();
        let target = if args.to_earliest {
            low
        } else if args.to_latest {
            high
        } else if let Some(o) = args.to_offset {
            o
        } else if let Some(n) = args.shift_by {
            now.unwrap_or(low).saturating_add(n)
        } else {
            by_time
                .as_ref()
                .and_then(|t| t.find_partition(&args.topic, *p))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(high)
        };
        let target = target.clamp(low, high);
        println!(
            "{:<30} {:>9} {:>12} {:>12}",
            args.topic,
            p,
            now.map_or("-".to_string(), |c| c.to_string()),
            target
        );
        plan.add_partition_offset(&args.topic, *p, Offset::Offset(target))
            .map_err(|e| Failure::broker(conn, "bad offset", e))?;
    }
    if !args.execute {
        println!("dry run: nothing changed; add --execute to apply");
        return Ok(());
    }
    let member = conn.consumer(Some(&args.group))?;
    member
        .commit(&plan, CommitMode::Sync)
        .map_err(|e| Failure::broker(conn, "cannot commit the new offsets", e))?;
    println!("offsets of group {} reset", args.group);
    Ok(())
}

async fn delete(conn: &Connection, group: &str) -> Result<(), Failure> {
    let admin = conn.admin()?;
    let results = admin
        .delete_groups(&[group], &admin_options())
        .await
        .map_err(|e| Failure::broker(conn, "cannot delete the group", e))?;
    match results.into_iter().next() {
        Some(Ok(_)) => {
            println!("deleted group {group}");
            Ok(())
        }
        Some(Err((_, RDKafkaErrorCode::GroupIdNotFound))) => Err(Failure::not_found(format!(
            "group {group:?} does not exist (see `runnel group list`)"
        ))),
        Some(Err((_, RDKafkaErrorCode::NonEmptyGroup))) => Err(Failure::refused(format!(
            "group {group:?} still has members: stop its consumers first"
        ))),
        Some(Err((_, code))) => Err(Failure::refused(format!(
            "cannot delete group {group:?}: {code}"
        ))),
        None => Err(Failure::refused("the broker gave no answer")),
    }
}

/// The (topic, partition)s of a consumer-protocol assignment (KIP-62 layout: version,
/// then topics with their partitions, then user data). Anything undecodable gives none.
fn decode_assignment(b: &[u8]) -> Vec<(String, i32)> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h)
    }
    fn i16_(b: &mut &[u8]) -> Option<i16> {
        take(b, 2).map(|x| i16::from_be_bytes([x[0], x[1]]))
    }
    fn i32_(b: &mut &[u8]) -> Option<i32> {
        take(b, 4).map(|x| i32::from_be_bytes([x[0], x[1], x[2], x[3]]))
    }
    let mut cur = b;
    let mut out = Vec::new();
    let parse = |cur: &mut &[u8], out: &mut Vec<(String, i32)>| -> Option<()> {
        i16_(cur)?; // version
        let topics = i32_(cur)?;
        for _ in 0..topics.max(0) {
            let len = usize::try_from(i16_(cur)?).ok()?;
            let topic = String::from_utf8(take(cur, len)?.to_vec()).ok()?;
            let n = i32_(cur)?;
            if n < 0 || n as usize > cur.len() / 4 {
                return None;
            }
            for _ in 0..n {
                out.push((topic.clone(), i32_(cur)?));
            }
        }
        Some(())
    };
    if parse(&mut cur, &mut out).is_none() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_decode_and_garbage_gives_none() {
        let mut b = vec![0, 1, 0, 0, 0, 1, 0, 6];
        b.extend_from_slice(b"orders");
        b.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            decode_assignment(&b),
            vec![("orders".to_string(), 1), ("orders".to_string(), 3)]
        );
        assert!(decode_assignment(&[0, 1, 0x7f, 0xff, 0xff, 0xff]).is_empty());
        assert!(decode_assignment(&[]).is_empty());
    }
}
