//! # The shop: orders, customers and notifications (the second essay's Figure 3)
//!
//! A customer places an order and is told it is confirmed. In the essay's Figure 1 the
//! orders service calls notifications, which calls customers: the notification needs
//! all three up. In Figure 3, which this module builds, orders and customers only state
//! facts, and notifications keeps its *own* copy of the customers it needs, so only
//! notifications has to be up for a notification to go out, and it catches up on
//! whatever happened while it was down.
//!
//! ```text
//!   client ─ PUT /customers/{id} ─▶ customers ─customerUpdated─▶ ┌───────────────────────┐
//!            GET /customers/{id} ◀─ (own table)                  │ customers (compacted, │
//!                                                                │ key: customer id)     │
//!                                                                └──────────┬────────────┘
//!   client ── POST /orders ─────▶ orders ─────orderCreated─────▶ ┌──────────┴──────────┐
//!            GET /orders/{id} ◀── (table from its own topic)     │ orders (key: order) │
//!                                                                └──┬───────────────┬──┘
//!                          ┌────────────────────────────────────────┘               │
//!                          ▼                                                        ▼
//!   notifications: own customer table ⨝ orderCreated                     loyalty: points
//!     ├─ appends one line per order to notifications.log               └─pointsEarned─▶ [points]
//!     └─ notificationSent ─▶ [notifications]                     GET /customers/{id}/points
//! ```
//!
//! Nobody calls anybody: the arrows into a service are subscriptions, the arrows out of
//! one are facts it states. `loyalty` came last and nobody changed for it (the essay's
//! "consumed by many parties without needing the requestor to set up new
//! integrations").
//!
//! ## The services
//!
//! | service | takes | states | keeps |
//! |---|---|---|---|
//! | `customers` | `PUT /customers/{id}` ([`UpdateCustomer`]) | [`CustomerUpdated`] on `customers` | table `customers`, from its own topic, for `GET /customers/{id}` |
//! | `orders` | `POST /orders` ([`PlaceOrder`]) | [`OrderCreated`] on `orders`; answers 202 with the order id | table `orders`, from its own topic, for `GET /orders/{id}` |
//! | `notifications` | `orderCreated`, `customerUpdated` | one line per order in the notifications file, and [`NotificationSent`] on `notifications` | its own table `customers` |
//! | `loyalty` | `orderCreated` | [`PointsEarned`] on `points` | table `points` per customer, for `GET /customers/{id}/points` |
//!
//! ## Design choices
//!
//! - **The event is the source of truth for an order** (the issue offers this or an
//!   outbox). `POST /orders` answers 202 only once the log acknowledged `orderCreated`,
//!   and `GET /orders/{id}` reads a table built from the `orders` topic itself. So the
//!   client's answer and the event cannot disagree after a crash: there is nothing else
//!   to disagree with. The price is that a `GET` right after the `POST` may answer 404
//!   for a moment (eventual consistency, which the essay names).
//! - **Notifications joins against its own table**, never against the customers
//!   service. An order whose customer the table has not seen yet fails with
//!   `HandlerError::not_yet`: the runtime parks it (only its own key waits; other
//!   orders go on) and tries again every `notifications.park_interval_ms`, so it goes
//!   out once the `customerUpdated` arrives. After `notifications.park_attempts_max`
//!   tries it is dead-lettered to `notifications.dlq` (replay it with `dlq`). While
//!   it waits it also holds its partition's commit point, so a crash meanwhile
//!   re-delivers the orders after it; the idempotent append makes that harmless.
//! - **Exactly once, as seen in the file**: delivery is at least once, and the append
//!   is idempotent by order id (see [`NotificationLog`] for the exact guarantee and
//!   why it holds). `notificationSent` is at least once: a re-delivered order emits it
//!   again, with the same `ce_id` (derived from the input record), so consumers drop
//!   the duplicate by id, or by order id.
//! - **Loyalty counts each order once** although it too sees orders at least once: its
//!   table remembers the order ids it counted per customer. It states `pointsEarned`,
//!   keyed by customer, because a table is keyed by its records' key and `orderCreated`
//!   is keyed by order.
//! - **`customers` is compacted** (latest `customerUpdated` per customer kept), and
//!   every service that reads it declares it so, whichever starts first creates it.
//!
//! ## Where this differs from the issue
//!
//! - The essay's notification service "sends the notification" by e-mail or SMS; here,
//!   as the issue says, it appends to a file, which is what lets the append be checked
//!   before it is made. A real mail API would take the order id as its idempotency key.
//!
//! ## Settings (`--set name=value`)
//!
//! | setting | default | why |
//! |---|---|---|
//! | `notifications.file` | `<state_dir>/notifications.log` | where notifications go; copies on one host share it |
//! | `notifications.park_interval_ms` | 1000 | how soon a waiting order looks for its customer again |
//! | `notifications.park_attempts_max` | 300 | how long (with the interval) an order waits before it is dead-lettered |
//! | `loyalty.points_per_item` | 1 | points per item ordered |

mod notification_log;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runnel_services::{
    Accepted, Command, CommandError, CommandMethod, Emitter, Error, HandlerError, QueryInput,
    Recoverability, Service, ServiceApi, ServiceHandle, SplitMix64, State, Table, TableRef,
    Transport,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Env, Running};

pub use events::{CustomerUpdated, Item, NotificationSent, OrderCreated, PointsEarned};
pub use notification_log::{Appended, NotificationLog};

/// Longest id (customer, order, sku), in bytes: ids go in URL paths and record keys.
pub const ID_BYTES_MAX: usize = 64;
/// Longest name, e-mail or phone, in bytes.
pub const TEXT_BYTES_MAX: usize = 256;
/// Most lines in one order.
pub const ITEMS_PER_ORDER_MAX: usize = 100;
/// Most units of one line.
pub const QUANTITY_MAX: u32 = 1000;
/// How many recent notifications `GET /notifications` lists.
pub const NOTIFICATIONS_RECENT_MAX: usize = 20;
/// Default of `notifications.park_interval_ms`.
pub const PARK_INTERVAL_MS_DEFAULT: u64 = 1000;
/// Default of `notifications.park_attempts_max`: five minutes at the default interval,
/// long enough for a customer who registers just after ordering.
pub const PARK_ATTEMPTS_MAX_DEFAULT: u32 = 300;

/// The facts of the shop, as the essay and the issue name them.
pub mod events {
    use serde::{Deserialize, Serialize};

    /// A customer's details changed (or were given for the first time). Keyed by
    /// customer id on the compacted `customers` topic, so the latest one per customer is
    /// all a new reader needs.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CustomerUpdated {
        /// Who.
        pub customer_id: String,
        /// What to call them in a notification.
        pub name: String,
        /// Where a notification goes.
        pub email: String,
        /// The other channel the essay mentions (SMS); may be empty.
        pub phone: String,
    }
    runnel_services::event!(CustomerUpdated, type = "customerUpdated", topic = "customers", key = |e| e.customer_id.clone());

    /// One line of an order.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Item {
        /// What.
        pub sku: String,
        /// How many, at least 1.
        pub quantity: u32,
    }

    /// An order was placed. Keyed by order id on `orders`; it names its customer, which
    /// is why readers join it against a table of customers rather than a partition.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OrderCreated {
        /// The order, as answered to the client.
        pub order_id: String,
        /// Who ordered: not checked by orders, which knows no customers.
        pub customer_id: String,
        /// What was ordered.
        pub items: Vec<Item>,
    }
    runnel_services::event!(OrderCreated, type = "orderCreated", topic = "orders", key = |e| e.order_id.clone());

    /// A customer was told about their order. The same JSON is the line in the
    /// notifications file, so the event and the visible side effect cannot differ.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NotificationSent {
        /// The order; at most one notification per order.
        pub order_id: String,
        /// Its customer.
        pub customer_id: String,
        /// The customer's name, as notifications' table had it.
        pub name: String,
        /// Where it went.
        pub email: String,
        /// What it said.
        pub message: String,
    }
    runnel_services::event!(NotificationSent, type = "notificationSent", topic = "notifications", key = |e| e.order_id.clone());

    /// Loyalty granted points for an order. Keyed by customer, so loyalty's table of
    /// points per customer can fold it (a table is keyed by its records' key).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PointsEarned {
        /// Who earned them.
        pub customer_id: String,
        /// For which order: each order counts once.
        pub order_id: String,
        /// How many.
        pub points: u64,
    }
    runnel_services::event!(PointsEarned, type = "pointsEarned", topic = "points", key = |e| e.customer_id.clone());
}

// ---------------------------------------------------------------------------------------
// Commands

/// The body of `PUT /customers/{id}`: give or change a customer's details. Who is the
/// path's `{id}` (letters, digits, `-`, `_`, `.`: see [`customers_api`]), not a field.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateCustomer {
    /// Their name.
    pub name: String,
    /// Their e-mail address.
    pub email: String,
    /// Their phone number; optional.
    #[serde(default)]
    pub phone: String,
}

impl Command for UpdateCustomer {
    fn validate(&self) -> Result<(), String> {
        check_text("name", &self.name, false)?;
        check_text("email", &self.email, false)?;
        check_text("phone", &self.phone, true)?;
        if !self.email.contains('@') {
            return Err(format!("email {:?} is not an e-mail address", self.email));
        }
        Ok(())
    }
}

/// `POST /orders`: place an order.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// Who orders. Not checked against customers: orders knows no other service, and an
    /// order may arrive before its customer's details do.
    pub customer_id: String,
    /// What: 1 to [`ITEMS_PER_ORDER_MAX`] lines of 1 to [`QUANTITY_MAX`] units.
    pub items: Vec<Item>,
}

impl Command for PlaceOrder {
    fn validate(&self) -> Result<(), String> {
        check_id("customer_id", &self.customer_id)?;
        if self.items.is_empty() || self.items.len() > ITEMS_PER_ORDER_MAX {
            return Err(format!(
                "an order has 1 to {ITEMS_PER_ORDER_MAX} items, not {}",
                self.items.len()
            ));
        }
        for item in &self.items {
            check_id("sku", &item.sku)?;
            if !(1..=QUANTITY_MAX).contains(&item.quantity) {
                return Err(format!(
                    "quantity of {} must be 1 to {QUANTITY_MAX}, not {}",
                    item.sku, item.quantity
                ));
            }
        }
        Ok(())
    }
}

/// An id must be usable as a URL path segment and a record key as it is.
fn check_id(field: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > ID_BYTES_MAX {
        return Err(format!("{field} must be 1 to {ID_BYTES_MAX} bytes"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{field} {id:?} may hold only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// Free text is bounded, so one customer cannot make every notification huge.
fn check_text(field: &str, text: &str, may_be_empty: bool) -> Result<(), String> {
    if (!may_be_empty && text.trim().is_empty()) || text.len() > TEXT_BYTES_MAX {
        let least = if may_be_empty { 0 } else { 1 };
        return Err(format!("{field} must be {least} to {TEXT_BYTES_MAX} bytes"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Table values

/// A customer as a table holds it: the customers service's own view, and the copy
/// notifications keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Who.
    pub customer_id: String,
    /// Their name.
    pub name: String,
    /// Their e-mail address.
    pub email: String,
    /// Their phone number (may be empty).
    pub phone: String,
}

impl From<&CustomerUpdated> for Customer {
    fn from(e: &CustomerUpdated) -> Customer {
        Customer {
            customer_id: e.customer_id.clone(),
            name: e.name.clone(),
            email: e.email.clone(),
            phone: e.phone.clone(),
        }
    }
}

/// An order as the orders service's view holds it: what `orderCreated` said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order.
    pub order_id: String,
    /// Who placed it.
    pub customer_id: String,
    /// What was ordered.
    pub items: Vec<Item>,
}

/// A customer's points, as loyalty's table holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Points {
    /// Who.
    pub customer_id: String,
    /// The total.
    pub points: u64,
    /// The orders counted, so that a `pointsEarned` delivered twice counts once. It
    /// grows with the customer's orders; a larger shop would keep a window of recent
    /// ones, since a duplicate follows its original closely.
    pub orders: BTreeSet<String>,
}

// ---------------------------------------------------------------------------------------
// customers

/// The customers service: states `customerUpdated`, keeps its own table of customers
/// (built from its own topic) for `GET /customers/{id}`. It knows no other service.
#[must_use]
pub fn customers_service() -> Service {
    Service::new("customers")
        .table(customers_table())
        .compacted::<CustomerUpdated>()
}

/// A table of customers from `customerUpdated`: the latest details win.
fn customers_table() -> Table<Customer> {
    Table::named("customers").upsert::<CustomerUpdated>(|e| Some(Customer::from(e)))
}

/// The customers service's HTTP API:
///
/// - `PUT /customers/{id}` `{"name", "email", "phone"?}` → 202
///   `{"customer_id", "id", "ids"}` once `customerUpdated` is stored; an `{id}` that
///   is not 1 to [`ID_BYTES_MAX`] letters, digits, `-`, `_` or `.` is 422
///   `invalid_command` naming `customer_id`, and nothing is emitted;
/// - `GET /customers/{id}` → 200 [`Customer`], or 404 while the table has not seen it.
///
/// # Panics
///
/// If `handle` is not an instance of [`customers_service`] (no customer table): a
/// wiring bug.
#[must_use]
pub fn customers_api(transport: Arc<dyn Transport>, handle: &ServiceHandle) -> ServiceApi {
    let table: TableRef<Customer> = handle
        .table("customers")
        .expect("customers_api needs an instance of customers_service");
    ServiceApi::new(transport, "customers")
        .command_with::<UpdateCustomer, _, _>(
            CommandMethod::Put,
            "/customers/{id}",
            |cmd, q: QueryInput, out| async move {
                let id = q.param("id")?;
                check_id("customer_id", id).map_err(CommandError::unprocessable)?;
                out.emit(&CustomerUpdated {
                    customer_id: id.to_string(),
                    name: cmd.name,
                    email: cmd.email,
                    phone: cmd.phone,
                });
                Ok(Accepted::with_body(json!({ "customer_id": id })))
            },
        )
        .query("/customers/{id}", move |q| {
            let table = table.clone();
            async move {
                let id = q.param("id")?;
                table.get(id)?.ok_or_else(|| {
                    CommandError::not_found(format!("no customer {id} (or not yet seen)"))
                })
            }
        })
}

// ---------------------------------------------------------------------------------------
// orders

/// The orders service: states `orderCreated`, and reads its own orders back from the
/// topic (the event is the source of truth). It knows no other service.
#[must_use]
pub fn orders_service() -> Service {
    Service::new("orders")
        .table(Table::<Order>::named("orders").upsert::<OrderCreated>(|e| {
            Some(Order {
                order_id: e.order_id.clone(),
                customer_id: e.customer_id.clone(),
                items: e.items.clone(),
            })
        }))
        .emits::<OrderCreated>()
}

/// The orders service's HTTP API:
///
/// - `POST /orders` `{"customer_id", "items": [{"sku", "quantity"}]}` → 202
///   `{"order_id", "id", "ids"}` once `orderCreated` is stored; nothing waits on any
///   other service;
/// - `GET /orders/{id}` → 200 [`Order`], from the table built from the `orders` topic;
///   404 until the table has read the event (moments after the 202).
///
/// # Panics
///
/// If `handle` is not an instance of [`orders_service`]: a wiring bug.
#[must_use]
pub fn orders_api(transport: Arc<dyn Transport>, handle: &ServiceHandle) -> ServiceApi {
    let table: TableRef<Order> = handle
        .table("orders")
        .expect("orders_api needs an instance of orders_service");
    ServiceApi::new(transport, "orders")
        .command::<PlaceOrder, _, _>("/orders", |cmd, out| async move {
            let order_id = new_order_id();
            out.emit(&OrderCreated {
                order_id: order_id.clone(),
                customer_id: cmd.customer_id,
                items: cmd.items,
            });
            Ok(Accepted::with_body(json!({ "order_id": order_id })))
        })
        .query("/orders/{id}", move |q| {
            let table = table.clone();
            async move {
                let id = q.param("id")?;
                table.get(id)?.ok_or_else(|| {
                    CommandError::not_found(format!(
                        "no order {id} (or not yet read back from the orders topic)"
                    ))
                })
            }
        })
}

/// A fresh order id: 64 random bits, unique across processes without coordination.
fn new_order_id() -> String {
    format!("o-{:016x}", SplitMix64::from_entropy().next_u64())
}

// ---------------------------------------------------------------------------------------
// notifications

/// The notifications service: keeps its own table of customers from `customerUpdated`
/// and joins each `orderCreated` against it; writes each notification to `log` once and
/// states `notificationSent`. Orders whose customer is not known yet wait (parked) with
/// the default [`notifications_recoverability`]; override it with
/// `Service::recoverability`.
#[must_use]
pub fn notifications_service(log: NotificationLog) -> Service<NotificationLog> {
    Service::with_state("notifications", log)
        .table(customers_table())
        .compacted::<CustomerUpdated>()
        .on::<OrderCreated, _>(notify)
        .emits::<NotificationSent>()
        .recoverability(notifications_recoverability(
            Duration::from_millis(PARK_INTERVAL_MS_DEFAULT),
            PARK_ATTEMPTS_MAX_DEFAULT,
        ))
}

/// How long an order waits for its customer: tried every `park_interval`, dead-lettered
/// after `park_attempts_max` tries. Other failures (the file) retry as by default.
#[must_use]
pub fn notifications_recoverability(
    park_interval: Duration,
    park_attempts_max: u32,
) -> Recoverability {
    Recoverability::default()
        .with_park_interval(park_interval)
        .with_park_attempts_max(park_attempts_max)
}

/// Joins an order against notifications' own customer table, and notifies once.
async fn notify(
    order: OrderCreated,
    customers: TableRef<Customer>,
    emit: Emitter,
    State(log): State<NotificationLog>,
) -> Result<(), HandlerError> {
    let Some(customer) = customers.get(&order.customer_id)? else {
        return Err(HandlerError::not_yet(format!(
            "order {} waits for customer {}: no customerUpdated seen yet",
            order.order_id, order.customer_id
        )));
    };
    let units: u64 = order.items.iter().map(|i| u64::from(i.quantity)).sum();
    let notification = NotificationSent {
        order_id: order.order_id.clone(),
        customer_id: customer.customer_id,
        message: format!(
            "Dear {}, your order {} ({units} items) is confirmed.",
            customer.name, order.order_id
        ),
        name: customer.name,
        email: customer.email,
    };
    // spawn_blocking: the append fsyncs, and it runs to the end even if this task is
    // cancelled (a crash in a test), so the in-memory index never disagrees with the file.
    let appended = tokio::task::spawn_blocking(move || log.append(&notification))
        .await
        .map_err(|e| HandlerError::transient(format!("the append task failed: {e}")))?
        .map_err(|e| HandlerError::transient(format!("appending the notification: {e}")))?;
    // Stated again on a re-delivery too: the first attempt may have crashed after the
    // append and before its event was sent. The file's line wins over today's details.
    emit.emit(appended.notification());
    Ok(())
}

/// The notifications service's HTTP API (queries only: it takes no commands):
///
/// - `GET /notifications` → `{"count", "file", "recent": [NotificationSent…]}`: how many
///   orders the file holds, and the last [`NOTIFICATIONS_RECENT_MAX`];
/// - `GET /notifications/{order_id}` → 200 [`NotificationSent`] as the file holds it,
///   or 404 while the order is not notified (not delivered yet, or waiting for its
///   customer).
///
/// Both read the file itself (catching up with it first), since the file, not the
/// instance's memory, is what was sent. `_handle` is not needed by these queries; it is
/// taken so that every service's API is built the same way.
#[must_use]
pub fn notifications_api(
    transport: Arc<dyn Transport>,
    _handle: &ServiceHandle,
    log: &NotificationLog,
) -> ServiceApi {
    let (one, all) = (log.clone(), log.clone());
    ServiceApi::new(transport, "notifications")
        .query("/notifications", move |_| {
            let log = all.clone();
            async move {
                let file = log.path().display().to_string();
                let (count, recent) = blocking(move || log.summary(NOTIFICATIONS_RECENT_MAX)).await?;
                Ok(json!({ "count": count, "file": file, "recent": recent }))
            }
        })
        .query("/notifications/{order_id}", move |q| {
            let log = one.clone();
            async move {
                let id = q.param("order_id")?.to_string();
                let found = {
                    let id = id.clone();
                    blocking(move || log.get(&id)).await?
                };
                found.ok_or_else(|| {
                    CommandError::not_found(format!(
                        "order {id} is not notified (not yet delivered, or waiting for its customer)"
                    ))
                })
            }
        })
}

/// Runs a blocking read of the notifications file off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, CommandError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CommandError::new(500, "internal", e))?
        .map_err(|e| CommandError::new(503, "unavailable", format!("the notifications file: {e}")))
}

// ---------------------------------------------------------------------------------------
// loyalty

/// What loyalty's handler needs to know.
#[derive(Clone, Copy, Debug)]
pub struct Loyalty {
    /// Points per unit ordered.
    pub points_per_item: u64,
}

/// The loyalty service: grants points for every `orderCreated` (stating
/// `pointsEarned`) and keeps a table of points per customer. Added without changing
/// orders, or anyone.
#[must_use]
pub fn loyalty_service(loyalty: Loyalty) -> Service<Loyalty> {
    Service::with_state("loyalty", loyalty)
        .on::<OrderCreated, _>(earn)
        .emits::<PointsEarned>()
        .table(
            Table::<Points>::named("points").fold::<PointsEarned>(|current, e| {
                let mut p = current.unwrap_or_else(|| Points {
                    customer_id: e.customer_id.clone(),
                    ..Points::default()
                });
                if p.orders.insert(e.order_id.clone()) {
                    p.points = p.points.saturating_add(e.points);
                }
                Some(p)
            }),
        )
}

/// Grants the points of one order.
async fn earn(
    order: OrderCreated,
    emit: Emitter,
    State(loyalty): State<Loyalty>,
) -> Result<(), HandlerError> {
    let units: u64 = order.items.iter().map(|i| u64::from(i.quantity)).sum();
    emit.emit(&PointsEarned {
        customer_id: order.customer_id,
        order_id: order.order_id,
        points: units.saturating_mul(loyalty.points_per_item),
    });
    Ok(())
}

/// The loyalty service's HTTP API:
///
/// - `GET /customers/{id}/points` → 200 `{"customer_id", "points", "orders"}` (orders
///   counted); a customer with no orders yet has 0 points (loyalty knows no list of
///   customers, only orders).
///
/// # Panics
///
/// If `handle` is not an instance of [`loyalty_service`]: a wiring bug.
#[must_use]
pub fn loyalty_api(transport: Arc<dyn Transport>, handle: &ServiceHandle) -> ServiceApi {
    let table: TableRef<Points> = handle
        .table("points")
        .expect("loyalty_api needs an instance of loyalty_service");
    ServiceApi::new(transport, "loyalty").query("/customers/{id}/points", move |q| {
        let table = table.clone();
        async move {
            let id = q.param("id")?;
            let p = table.get(id)?.unwrap_or_default();
            Ok(json!({ "customer_id": id, "points": p.points, "orders": p.orders.len() }))
        }
    })
}

// ---------------------------------------------------------------------------------------
// start

/// Starts the shop service `name` (`customers`, `orders`, `notifications` or `loyalty`)
/// on `env`, waits until its tables caught up, and serves its API.
pub async fn start(name: &str, env: &Env) -> Result<Running, Error> {
    let runtime = env.runtime();
    let transport = env.transport.clone();
    match name {
        "customers" => {
            let mut handle = runtime.start(customers_service(), &env.instance).await?;
            handle.wait_ready().await?;
            let api = customers_api(transport, &handle);
            Running::serve(env, handle, api).await
        }
        "orders" => {
            let mut handle = runtime.start(orders_service(), &env.instance).await?;
            handle.wait_ready().await?;
            let api = orders_api(transport, &handle);
            Running::serve(env, handle, api).await
        }
        "notifications" => {
            let path: PathBuf = env.setting(
                "notifications.file",
                env.state_dir.join("notifications.log"),
            )?;
            let log = open_log(path).await?;
            let parking = notifications_recoverability(
                Duration::from_millis(
                    env.setting("notifications.park_interval_ms", PARK_INTERVAL_MS_DEFAULT)?,
                ),
                env.setting("notifications.park_attempts_max", PARK_ATTEMPTS_MAX_DEFAULT)?,
            );
            let service = notifications_service(log.clone()).recoverability(parking);
            let mut handle = runtime.start(service, &env.instance).await?;
            handle.wait_ready().await?;
            let api = notifications_api(transport, &handle, &log);
            Running::serve(env, handle, api).await
        }
        "loyalty" => {
            let loyalty = Loyalty {
                points_per_item: env.setting("loyalty.points_per_item", 1)?,
            };
            let mut handle = runtime
                .start(loyalty_service(loyalty), &env.instance)
                .await?;
            handle.wait_ready().await?;
            let api = loyalty_api(transport, &handle);
            Running::serve(env, handle, api).await
        }
        other => Err(Error::Config(format!(
            "no shop service {other:?}; they are customers, orders, notifications, loyalty"
        ))),
    }
}

/// Opens the notifications file off the async threads (it reads the whole file).
async fn open_log(path: PathBuf) -> Result<NotificationLog, Error> {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || NotificationLog::open(path))
        .await
        .map_err(|e| Error::Config(format!("opening notifications.file {shown}: {e}")))?
        .map_err(|e| Error::Config(format!("cannot open notifications.file {shown}: {e}")))
}
