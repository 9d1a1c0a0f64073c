//! Typed contracts: what an event and a command are, and how they become bytes.
//!
//! An event is a fact a service states; its Rust type *is* its contract. The type carries
//! its CloudEvents type name (`ce_type`), a schema version, the topic it lives on and its
//! partition key, all as compile-time constants, so there is no string-keyed registry to
//! fall out of step with the code. Several event types may share one topic; consumers
//! dispatch on `ce_type`.
//!
//! JSON is the codec: [`encode`] and [`decode`]. A record that does not decode is a
//! [`DecodeError`], which the runtime treats as a permanent failure (dead letter), never
//! a crash loop.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A fact a service publishes, with everything needed to route it.
///
/// Implement it in one line with [`event!`](crate::event!).
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The CloudEvents type, sent as the `ce_type` header, for example `"orderCreated"`.
    /// Consumers dispatch on it, so it must be unique among the events of a topic.
    const TYPE: &'static str;
    /// The schema version, sent as the `ce_dataversion` header. Bump it on a change that
    /// old readers cannot decode.
    const VERSION: u32 = 1;
    /// The topic the event is published to.
    const TOPIC: &'static str;
    /// The partition key: every event with the same key lands on the same partition and
    /// is therefore handled in order.
    fn key(&self) -> String;
}

/// A request to do something, arriving over HTTP. A command is validated and, if valid,
/// emits events; it is never stored itself.
pub trait Command: DeserializeOwned + Send + 'static {
    /// Checks the command beyond what deserialisation already checked. An `Err` becomes a
    /// 4xx answer carrying the message, and nothing is emitted.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Implements [`Event`](crate::Event) for a type in one line.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderCreated {
///     order_id: String,
/// }
/// runnel_services::event!(OrderCreated, type = "orderCreated", topic = "orders", key = |e| e.order_id.clone());
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderShipped {
///     order_id: String,
/// }
/// runnel_services::event!(OrderShipped, type = "orderShipped", version = 2, topic = "orders", key = |e| e.order_id.clone());
///
/// use runnel_services::Event;
/// assert_eq!(OrderShipped::VERSION, 2);
/// assert_eq!(OrderCreated { order_id: "o-1".into() }.key(), "o-1");
/// ```
///
/// `version` may come right after `type` or last; it defaults to 1. The type name and the
/// topic are checked at compile time to be non-empty, and the version to be at least 1.
#[macro_export]
macro_rules! event {
    ($ty:ty, type = $name:expr, topic = $topic:expr, key = |$e:pat_param| $key:expr $(,)?) => {
        $crate::event!($ty, type = $name, version = 1, topic = $topic, key = |$e| $key);
    };
    ($ty:ty, type = $name:expr, topic = $topic:expr, key = |$e:pat_param| $key:expr, version = $version:expr $(,)?) => {
        $crate::event!($ty, type = $name, version = $version, topic = $topic, key = |$e| $key);
    };
    ($ty:ty, type = $name:expr, version = $version:expr, topic = $topic:expr, key = |$e:pat_param| $key:expr $(,)?) => {
        impl $crate::Event for $ty {
            const TYPE: &'static str = $name;
            const VERSION: u32 = $version;
            const TOPIC: &'static str = $topic;
            fn key(&self) -> ::std::string::String {
                let $e = self;
                $key
            }
        }
        const _: () = {
            assert!(!<$ty as $crate::Event>::TYPE.is_empty(), "an event type must not be empty");
            assert!(!<$ty as $crate::Event>::TOPIC.is_empty(), "an event topic must not be empty");
            assert!(<$ty as $crate::Event>::VERSION >= 1, "event versions start at 1");
        };
    };
}

/// A record's value could not be decoded as the event type its headers named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {event_type}: {message}")]
pub struct DecodeError {
    /// The `ce_type` that was expected, so a dead letter says what the bytes should have been.
    event_type: String,
    /// serde's description of what went wrong, with line and column.
    message: String,
}

impl DecodeError {
    /// A decode failure for `event_type`, described by `message`.
    pub fn new(event_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            event_type: event_type.into(),
            message: message.into(),
        }
    }

    /// The event type that was expected.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The codec's description of the failure.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The record value for `event`: its JSON.
///
/// # Panics
///
/// If the type's `Serialize` implementation fails, which for JSON means a map whose keys
/// are not strings or numbers, or a hand-written `Serialize` returning an error. That is a
/// bug in the contract type, found by the first test that emits it, not a runtime
/// condition, so it is not part of the return type.
pub fn encode<E: Event>(event: &E) -> Vec<u8> {
    match serde_json::to_vec(event) {
        Ok(bytes) => bytes,
        Err(error) => panic!("event {} cannot be encoded as JSON: {error}", E::TYPE),
    }
}

/// Decodes a record value as an `E`.
pub fn decode<E: Event>(bytes: &[u8]) -> Result<E, DecodeError> {
    serde_json::from_slice(bytes).map_err(|error| DecodeError::new(E::TYPE, error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct OrderCreated {
        order_id: String,
        amount_cents: u64,
    }
    crate::event!(OrderCreated, type = "orderCreated", topic = "orders", key = |e| e.order_id.clone());

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OrderShipped {
        order_id: String,
    }
    crate::event!(
        OrderShipped,
        type = "orderShipped",
        version = 2,
        topic = "orders",
        key = |e| e.order_id.clone(),
    );

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Tick;
    crate::event!(Tick, type = "tick", topic = "clock", key = |_| String::new(), version = 3);

    #[derive(Debug, Deserialize)]
    struct PlaceOrder {
        amount_cents: u64,
    }
    impl Command for PlaceOrder {
        fn validate(&self) -> Result<(), String> {
            if self.amount_cents == 0 {
                return Err("amount_cents must be positive".into());
            }
            Ok(())
        }
    }

    #[derive(Debug, Deserialize)]
    struct Ping {}
    impl Command for Ping {}

    #[derive(Serialize, Deserialize)]
    struct BadKeys {
        map: BTreeMap<(u8, u8), u8>,
    }
    crate::event!(BadKeys, type = "bad", topic = "bad", key = |_| String::new());

    fn order() -> OrderCreated {
        OrderCreated {
            order_id: "o-17".into(),
            amount_cents: 1250,
        }
    }

    #[test]
    fn event_macro_sets_constants_and_default_version() {
        assert_eq!(OrderCreated::TYPE, "orderCreated");
        assert_eq!(OrderCreated::TOPIC, "orders");
        assert_eq!(OrderCreated::VERSION, 1);
        assert_eq!(order().key(), "o-17");
    }

    #[test]
    fn event_macro_accepts_version_after_type_or_last() {
        assert_eq!(OrderShipped::VERSION, 2);
        assert_eq!(OrderShipped::TYPE, "orderShipped");
        assert_eq!(Tick::VERSION, 3);
        assert_eq!(Tick::TOPIC, "clock");
        assert_eq!(Tick.key(), "");
    }

    #[test]
    fn encode_is_plain_json() {
        let bytes = encode(&order());
        assert_eq!(bytes, br#"{"order_id":"o-17","amount_cents":1250}"#);
    }

    #[test]
    fn decode_round_trips() {
        let event = order();
        assert_eq!(decode::<OrderCreated>(&encode(&event)), Ok(event));
    }

    #[test]
    fn decode_failure_names_the_type_and_carries_the_serde_message() {
        let error = decode::<OrderCreated>(br#"{"order_id":"o-1"}"#).unwrap_err();
        assert_eq!(error.event_type(), "orderCreated");
        assert!(error.message().contains("amount_cents"), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("cannot decode orderCreated: ")
        );
    }

    #[test]
    fn decode_rejects_garbage_and_empty_values() {
        assert!(decode::<OrderCreated>(b"\xff\x00not json").is_err());
        assert!(decode::<OrderCreated>(b"").is_err());
        assert!(decode::<OrderCreated>(b"null").is_err());
    }

    #[test]
    #[should_panic(expected = "event bad cannot be encoded as JSON")]
    fn encode_panics_on_a_contract_that_json_cannot_represent() {
        let mut map = BTreeMap::new();
        map.insert((1, 2), 3);
        encode(&BadKeys { map });
    }

    #[test]
    fn command_validation_defaults_to_ok_and_can_refuse() {
        let ping: Ping = serde_json::from_str("{}").unwrap();
        assert_eq!(ping.validate(), Ok(()));
        let zero: PlaceOrder = serde_json::from_str(r#"{"amount_cents":0}"#).unwrap();
        assert_eq!(zero.validate(), Err("amount_cents must be positive".into()));
        let fine: PlaceOrder = serde_json::from_str(r#"{"amount_cents":5}"#).unwrap();
        assert_eq!(fine.validate(), Ok(()));
    }
}
