//! Tables: local state built from topics (Kafka Streams' KTable, here always global:
//! every instance reads every partition of the source topics).
//!
//! A table lives in the instance's [`runnel_state::Store`] (redb). Each batch of source
//! records is applied in one atomic write together with the offsets it consumed, so
//! after a crash the table and its position agree and restoring resumes exactly where
//! the state is. Values are stored as JSON, so interactive queries can serve them as
//! they are.
//!
//! Why global: the essays' joins are by a key the stream is not partitioned by (an
//! order names its customer; orders are keyed by order id), so the table must hold
//! every customer wherever the order lands. Partitioned (co-partitioned) tables are a
//! possible later addition for tables too large for one machine.

use std::any::TypeId;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::contract::{self, Event};
use crate::error::HandlerError;

/// What a source does to the table for one event: the new value of its key, `None` to
/// delete it. Gets the key's current value (when its [`Route`] reads it) and the event.
pub(crate) type Apply =
    Arc<dyn Fn(Option<&[u8]>, &[u8]) -> Result<Option<Vec<u8>>, HandlerError> + Send + Sync>;

/// One event type feeding a table.
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) topic: &'static str,
    pub(crate) event_type: &'static str,
    pub(crate) route: Route,
}

/// How the table feeder applies one event type.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) apply: Apply,
    /// Whether `apply` looks at the current value. An upsert does not, so the feeder
    /// skips reading the key from the store (the most expensive part of a fold).
    pub(crate) reads_current: bool,
}

/// A table declaration, typed by the value it holds.
pub struct Table<V> {
    pub(crate) name: String,
    pub(crate) sources: Vec<Source>,
    _value: PhantomData<fn() -> V>,
}

impl<V> std::fmt::Debug for Table<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("name", &self.name).finish()
    }
}

impl<V: Serialize + DeserializeOwned + Send + Sync + 'static> Table<V> {
    /// A table named `name` (unique within its service).
    #[must_use]
    pub fn named(name: &str) -> Table<V> {
        Table {
            name: name.to_string(),
            sources: Vec::new(),
            _value: PhantomData,
        }
    }

    /// Each `E` sets its key's value to `f(event)` (`None` deletes it): the latest
    /// event per key wins, as in a compacted topic.
    #[must_use]
    pub fn upsert<E: Event>(mut self, f: impl Fn(&E) -> Option<V> + Send + Sync + 'static) -> Self {
        let apply: Apply = Arc::new(move |_current, payload| {
            let event = contract::decode::<E>(payload).map_err(HandlerError::from)?;
            Ok(f(&event).map(|v| encode_value(&v)))
        });
        self.sources.push(Source {
            topic: E::TOPIC,
            event_type: E::TYPE,
            route: Route {
                apply,
                reads_current: false,
            },
        });
        self
    }

    /// Each `E` folds into its key's current value: `f(current, event)` is the new value
    /// (`None` deletes it).
    #[must_use]
    pub fn fold<E: Event>(
        mut self,
        f: impl Fn(Option<V>, &E) -> Option<V> + Send + Sync + 'static,
    ) -> Self {
        let apply: Apply = Arc::new(move |current, payload| {
            let event = contract::decode::<E>(payload).map_err(HandlerError::from)?;
            let current = match current {
                Some(bytes) => Some(serde_json::from_slice::<V>(bytes).map_err(|e| {
                    HandlerError::permanent(format!("stored value does not decode: {e}"))
                })?),
                None => None,
            };
            Ok(f(current, &event).map(|v| encode_value(&v)))
        });
        self.sources.push(Source {
            topic: E::TOPIC,
            event_type: E::TYPE,
            route: Route {
                apply,
                reads_current: true,
            },
        });
        self
    }
}

fn encode_value<V: Serialize>(v: &V) -> Vec<u8> {
    // Serializing plain data to JSON fails only for maps with non-string keys, which a
    // table value type should not have; store null then rather than crash.
    serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec())
}

/// A table with its value type erased, as a service holds it.
pub(crate) struct TableDef {
    pub(crate) name: String,
    pub(crate) value_type: TypeId,
    pub(crate) sources: Vec<Source>,
    /// Makes the typed read handle once the store is open.
    pub(crate) reader: fn(Arc<runnel_state::Store>, String) -> Arc<dyn std::any::Any + Send + Sync>,
}

impl<V: Serialize + DeserializeOwned + Send + Sync + 'static> From<Table<V>> for TableDef {
    fn from(t: Table<V>) -> TableDef {
        TableDef {
            name: t.name,
            value_type: TypeId::of::<V>(),
            sources: t.sources,
            reader: |store, name| {
                Arc::new(TableRef::<V> {
                    store,
                    name: Arc::from(name),
                    _value: PhantomData,
                })
            },
        }
    }
}

impl TableDef {
    /// The topics this table reads.
    pub(crate) fn topics(&self) -> Vec<&'static str> {
        let mut t: Vec<_> = self.sources.iter().map(|s| s.topic).collect();
        t.sort_unstable();
        t.dedup();
        t
    }

    /// The sources of `topic`, by event type.
    pub(crate) fn routes(&self) -> HashMap<(&'static str, &'static str), Route> {
        self.sources
            .iter()
            .map(|s| ((s.topic, s.event_type), s.route.clone()))
            .collect()
    }
}

/// A read-only handle on a table: the stream-table join, and interactive queries.
pub struct TableRef<V> {
    store: Arc<runnel_state::Store>,
    name: Arc<str>,
    _value: PhantomData<fn() -> V>,
}

impl<V> Clone for TableRef<V> {
    fn clone(&self) -> Self {
        TableRef {
            store: self.store.clone(),
            name: self.name.clone(),
            _value: PhantomData,
        }
    }
}

impl<V> std::fmt::Debug for TableRef<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableRef")
            .field("name", &self.name)
            .finish()
    }
}

impl<V: DeserializeOwned> TableRef<V> {
    /// The table's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of `key`, if the table has one.
    pub fn get(&self, key: &str) -> Result<Option<V>, HandlerError> {
        let bytes = self
            .store
            .get(&self.name, key.as_bytes())
            .map_err(|e| HandlerError::transient(format!("reading table {}: {e}", self.name)))?;
        bytes
            .map(|b| {
                serde_json::from_slice(&b).map_err(|e| {
                    HandlerError::permanent(format!(
                        "table {} holds a value that does not decode: {e}",
                        self.name
                    ))
                })
            })
            .transpose()
    }

    /// The raw JSON of `key` (interactive queries serve it as it is).
    pub fn get_json(&self, key: &str) -> Result<Option<Vec<u8>>, HandlerError> {
        self.store
            .get(&self.name, key.as_bytes())
            .map_err(|e| HandlerError::transient(format!("reading table {}: {e}", self.name)))
    }

    /// Up to `limit` entries in key order, from `from` (inclusive).
    pub fn scan(&self, from: Option<&str>, limit: usize) -> Result<Vec<(String, V)>, HandlerError> {
        let rows = self
            .store
            .scan(&self.name, from.map(str::as_bytes), limit)
            .map_err(|e| HandlerError::transient(format!("reading table {}: {e}", self.name)))?;
        rows.into_iter()
            .map(|(k, v)| {
                let value = serde_json::from_slice(&v).map_err(|e| {
                    HandlerError::permanent(format!("table {} value: {e}", self.name))
                })?;
                Ok((String::from_utf8_lossy(&k).into_owned(), value))
            })
            .collect()
    }

    /// How many keys the table holds.
    pub fn len(&self) -> Result<u64, HandlerError> {
        self.store
            .len(&self.name)
            .map_err(|e| HandlerError::transient(format!("reading table {}: {e}", self.name)))
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> Result<bool, HandlerError> {
        Ok(self.len()? == 0)
    }
}
