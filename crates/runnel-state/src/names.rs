//! The naming rules and the size limits: one home, called by every write and read.

use crate::StoreError;

/// Longest table (or scope) name, in bytes.
pub const TABLE_NAME_BYTES_MAX: usize = 200;
/// Longest topic name in an offset, in bytes (its length is stored in a `u16`, and
/// topic names in practice stay far below this).
pub const TOPIC_NAME_BYTES_MAX: usize = 255;
/// Largest key, in bytes. Keys are copied into every B-tree branch that routes to them,
/// so they should be small.
pub const KEY_BYTES_MAX: usize = 64 * 1024;
/// Largest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Names that start with this belong to the store itself (the offsets table).
pub(crate) const RESERVED_PREFIX: &str = "__";

// redb refuses values over 3 GiB; lengths in the offset key are u16.
const _: () = assert!(VALUE_BYTES_MAX < 3 * 1024 * 1024 * 1024);
const _: () = assert!(TABLE_NAME_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(TOPIC_NAME_BYTES_MAX <= u16::MAX as usize);

/// Checks a user table name; `kind` ("table" or "scope") goes into the error.
pub(crate) fn check_table(kind: &'static str, name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > TABLE_NAME_BYTES_MAX {
        "it is longer than 200 bytes"
    } else if name.starts_with(RESERVED_PREFIX) {
        "names starting with \"__\" are reserved for the store"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidName {
        kind,
        name: name.to_owned(),
        reason,
    })
}

/// Checks the topic of an offset.
pub(crate) fn check_topic(topic: &str) -> Result<(), StoreError> {
    let reason = if topic.is_empty() {
        "it is empty"
    } else if topic.len() > TOPIC_NAME_BYTES_MAX {
        "it is longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidName {
        kind: "topic",
        name: topic.to_owned(),
        reason,
    })
}

/// Checks the sizes of a key and (for a put) its value.
pub(crate) fn check_sizes(table: &str, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
    let too_large = |what, bytes, max| StoreError::TooLarge {
        table: table.to_owned(),
        what,
        bytes,
        max,
    };
    if key.len() > KEY_BYTES_MAX {
        return Err(too_large("key", key.len(), KEY_BYTES_MAX));
    }
    match value {
        Some(value) if value.len() > VALUE_BYTES_MAX => {
            Err(too_large("value", value.len(), VALUE_BYTES_MAX))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_follow_the_rules() {
        assert!(check_table("table", "customers").is_ok());
        assert!(check_table("table", &"x".repeat(TABLE_NAME_BYTES_MAX)).is_ok());
        assert!(check_table("table", "_one_underscore_is_fine").is_ok());
        for bad in ["", "__offsets", "__", &"x".repeat(TABLE_NAME_BYTES_MAX + 1)] {
            let err = check_table("table", bad).unwrap_err();
            assert!(matches!(err, StoreError::InvalidName { .. }), "{bad:?}");
        }
    }

    #[test]
    fn sizes_are_bounded() {
        assert!(check_sizes("t", &[0; KEY_BYTES_MAX], Some(&[])).is_ok());
        assert!(check_sizes("t", &[0; KEY_BYTES_MAX + 1], None).is_err());
        assert!(check_sizes("t", b"k", Some(&vec![0; VALUE_BYTES_MAX + 1])).is_err());
    }
}
