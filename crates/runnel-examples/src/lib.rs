//! # runnel-examples: the essays' systems, running for real
//!
//! Three systems from the two essays in the project's reference folder, each as
//! separately runnable services built only on `runnel-services`:
//!
//! - [`shop`]: the second essay's Figure 3. `customers` and `orders` take commands and
//!   state facts; `notifications` keeps its own customer table and joins each order
//!   against it; `loyalty` joins later without anyone changing.
//! - [`coffee`]: the first essay's coffee shop. The `cashier` takes orders and payments,
//!   `barista` copies compete for the cups in the queue, the `counter` answers "is my
//!   drink ready?" from its own table.
//! - [`family`]: the second essay's Figure 4. The daughter says "my cup is empty";
//!   `daddy` and `mummy` both hear it, and whoever is free refills it.
//!
//! Each service starts with [`start`]: on any transport (the embedded log in one
//! process, or a Kafka-compatible broker for separate processes), with its HTTP port.
//! `runnel example SERVICE` runs one alone; `runnel demo` runs them all as separate
//! processes and tells the story.
//!
//! ## Boundary
//!
//! Depends on `runnel-services` only (and serde, tokio): what these services can do, any
//! service written with the toolkit can do.

pub mod coffee;
mod common;
pub mod family;
pub mod shop;

pub use common::{Env, Running, SERVICES, start};
