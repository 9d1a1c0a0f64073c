//! The offsets table: where each scope's state has read up to, in each source partition.
//!
//! It is one redb table, `__offsets`, next to the user tables in the same file, so a batch
//! that changes state and moves offsets commits both or neither.
//!
//! Key (big-endian throughout, so keys of one scope are adjacent and a scope is found by
//! prefix):
//!
//! | bytes              | field                                            |
//! |--------------------|--------------------------------------------------|
//! | `0..2`             | `S`, the scope's length in bytes, `u16`          |
//! | `2..2+S`           | the scope, UTF-8                                 |
//! | `2+S..4+S`         | `T`, the topic's length in bytes, `u16`          |
//! | `4+S..4+S+T`       | the topic, UTF-8                                 |
//! | `4+S+T..8+S+T`     | the partition, `i32` (never negative)            |
//!
//! Value: 8 bytes, the next offset to read, `i64` (never negative).
//!
//! The length prefix makes the encoding unambiguous: no scope's prefix is a prefix of
//! another scope's.

/// The redb table holding every scope's offsets.
pub(crate) const OFFSETS_TABLE: &str = "__offsets";

/// Appends the key prefix shared by every offset of `scope` to `out`.
pub(crate) fn encode_scope(out: &mut Vec<u8>, scope: &str) {
    let len = u16::try_from(scope.len()).expect("scope names are validated to fit a u16");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(scope.as_bytes());
}

/// Writes the full key of (`scope`, `topic`, `partition`) into `out`, replacing its contents.
pub(crate) fn encode_key(out: &mut Vec<u8>, scope: &str, topic: &str, partition: i32) {
    assert!(partition >= 0, "partitions are validated before encoding");
    out.clear();
    encode_scope(out, scope);
    let len = u16::try_from(topic.len()).expect("topic names are validated to fit a u16");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&partition.to_be_bytes());
}

/// Encodes the next offset to read.
pub(crate) fn encode_value(next: i64) -> [u8; 8] {
    assert!(next >= 0, "offsets are validated before encoding");
    next.to_be_bytes()
}

/// Decodes a key of `scope` (the caller found it by `scope`'s prefix) into its topic and
/// partition, and a value into the next offset. `Err` says what is wrong.
pub(crate) fn decode(
    scope_prefix_len: usize,
    key: &[u8],
    value: &[u8],
) -> Result<(String, i32, i64), String> {
    let rest = key
        .get(scope_prefix_len..)
        .ok_or_else(|| format!("key of {} bytes is shorter than its scope", key.len()))?;
    let (len, rest) = split_u16(rest).ok_or("key ends inside the topic length")?;
    if rest.len() != usize::from(len) + 4 {
        return Err(format!(
            "key holds {} bytes after a topic length of {len}; expected {}",
            rest.len(),
            usize::from(len) + 4
        ));
    }
    let (topic, partition) = rest.split_at(usize::from(len));
    let topic = std::str::from_utf8(topic)
        .map_err(|_| "topic is not UTF-8".to_owned())?
        .to_owned();
    let partition = i32::from_be_bytes(partition.try_into().expect("length checked above"));
    let next: [u8; 8] = value
        .try_into()
        .map_err(|_| format!("value of {} bytes; expected 8", value.len()))?;
    let next = i64::from_be_bytes(next);
    if partition < 0 || next < 0 {
        return Err(format!("negative partition {partition} or offset {next}"));
    }
    Ok((topic, partition, next))
}

fn split_u16(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*len), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout_matches_the_byte_table() {
        let mut key = Vec::new();
        encode_key(&mut key, "ab", "t", 258);
        assert_eq!(key, [0, 2, b'a', b'b', 0, 1, b't', 0, 0, 1, 2]);
        assert_eq!(encode_value(1), [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(decode(4, &key, &encode_value(7)), Ok(("t".into(), 258, 7)));
    }

    #[test]
    fn a_scope_is_never_the_prefix_of_another() {
        let (mut a, mut ab) = (Vec::new(), Vec::new());
        encode_scope(&mut a, "a");
        encode_key(&mut ab, "ab", "t", 0);
        assert!(!ab.starts_with(&a));
    }

    #[test]
    fn decode_rejects_malformed_records() {
        let mut key = Vec::new();
        encode_key(&mut key, "s", "topic", 0);
        assert!(decode(3, &key[..key.len() - 1], &encode_value(0)).is_err());
        assert!(decode(3, &key, &[0; 7]).is_err());
        assert!(decode(3, &key, &(-1i64).to_be_bytes()).is_err());
        assert!(decode(30, &key, &encode_value(0)).is_err());
    }
}
