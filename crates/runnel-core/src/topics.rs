//! Topic rules shared by every front end: which names are internal, and which topics
//! users may create, write, alter or delete.

use runnel_log::config::validate_topic_name;

/// The internal topic that holds committed offsets (`crate::offsets`).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// True for topics only Runnel itself writes. Metadata shows them as internal.
#[must_use]
pub fn is_internal(name: &str) -> bool {
    name == OFFSETS_TOPIC
}

/// Why a user may not create, write, alter or delete a topic of that name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicRuleError {
    /// Not a valid Kafka topic name (`runnel_log::config::validate_topic_name`).
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An internal topic: Runnel keeps its own state there.
    #[error("{name} is internal: Runnel keeps its own state there")]
    Internal {
        /// The name given.
        name: String,
    },
}

/// The one check for a topic name users may create, produce to, alter or delete.
pub fn check_user_topic(name: &str) -> Result<(), TopicRuleError> {
    validate_topic_name(name).map_err(|reason| TopicRuleError::InvalidName {
        name: name.to_string(),
        reason,
    })?;
    if is_internal(name) {
        return Err(TopicRuleError::Internal {
            name: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_topics_are_valid_names_that_are_not_internal() {
        assert_eq!(check_user_topic("orders.v1"), Ok(()));
        assert!(matches!(
            check_user_topic(OFFSETS_TOPIC),
            Err(TopicRuleError::Internal { .. })
        ));
        let bad = check_user_topic("a b").unwrap_err();
        assert!(matches!(bad, TopicRuleError::InvalidName { .. }));
        assert!(bad.to_string().starts_with("invalid topic name \"a b\""));
        assert!(is_internal(OFFSETS_TOPIC) && !is_internal("orders"));
    }
}
