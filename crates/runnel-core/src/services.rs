//! What services built with `runnel-services` state on the log for everyone else to
//! read: the names of their dead-letter topics and headers, and the topic their
//! instances state their status on. One home, so the services toolkit that writes them
//! and the front ends that read them (the HTTP API, the console) agree.

/// The compacted topic running instances state their status on, keyed
/// `<service>/<instance>`, a JSON value each.
pub const STATUS_TOPIC: &str = "runnel.services";

/// A service's dead-letter topic: `<service>.dlq`.
#[must_use]
pub fn dead_letter_topic(service: &str) -> String {
    format!("{service}.dlq")
}

/// The headers a replayed dead letter is published with: its own, without the
/// dead-letter headers (and without an earlier replay's mark), marked as replayed from
/// `<dead-letter topic>@<offset>`. Null header values are left out.
#[must_use]
pub fn replay_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    dead_letter_topic: &str,
    offset: i64,
) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = headers
        .into_iter()
        .filter(|(k, _)| !k.starts_with(dlq_headers::PREFIX) && *k != dlq_headers::REPLAYED_FROM)
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_vec())))
        .collect();
    out.push((
        dlq_headers::REPLAYED_FROM.to_string(),
        format!("{dead_letter_topic}@{offset}").into_bytes(),
    ));
    out
}

/// Headers a dead letter carries besides the original record's.
pub mod dlq_headers {
    /// Why the record was given up on.
    pub const ERROR: &str = "runnel_dlq_error";
    /// The error's kind: transient, permanent or not_yet.
    pub const ERROR_KIND: &str = "runnel_dlq_error_kind";
    /// The topic the record came from.
    pub const TOPIC: &str = "runnel_dlq_topic";
    /// Its partition.
    pub const PARTITION: &str = "runnel_dlq_partition";
    /// Its offset.
    pub const OFFSET: &str = "runnel_dlq_offset";
    /// How many times its handler ran.
    pub const ATTEMPTS: &str = "runnel_dlq_attempts";
    /// The service that gave up.
    pub const SERVICE: &str = "runnel_dlq_service";
    /// When, ms since the Unix epoch.
    pub const TIME_MS: &str = "runnel_dlq_time_ms";
    /// What every dead-letter header starts with; a replay drops all of them.
    pub const PREFIX: &str = "runnel_dlq_";
    /// Added by a replay: `<service>.dlq@<offset>`.
    pub const REPLAYED_FROM: &str = "runnel_replayed_from";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_drops_the_dead_letter_headers_and_says_where_it_came_from() {
        let headers = [
            ("ce_type", Some(&b"orderCreated"[..])),
            (dlq_headers::ERROR, Some(&b"boom"[..])),
            (dlq_headers::REPLAYED_FROM, Some(&b"x.dlq@1"[..])),
            ("empty", None),
        ];
        assert_eq!(
            replay_headers(headers, "billing.dlq", 7),
            vec![
                ("ce_type".to_string(), b"orderCreated".to_vec()),
                (
                    dlq_headers::REPLAYED_FROM.to_string(),
                    b"billing.dlq@7".to_vec()
                ),
            ]
        );
    }
}
