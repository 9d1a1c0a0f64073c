//! The cashier: writes the name and the drink on the cup, puts it in the queue, and
//! takes the payment.
//!
//! Two commands. Placing an order (`POST /orders`) is fire-and-forget for the
//! customer: 202 as soon as `orderPlaced` is stored. Paying (`POST /orders/{id}/payment`)
//! is the essay's example of a command that is answered: the customer stands at the till
//! until the card is taken or refused.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_services::http::{CommandMethod, QueryInput, ServiceApi};
use runnel_services::{
    Accepted, Command, CommandError, Error, Outbox, Service, ServiceHandle, SplitMix64, Table,
    TableRef, Transport,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::events::{OrderPlaced, PaymentMethod, PaymentOutcome, PaymentProcessed};
use super::{Drink, MENU, millis_setting};
use crate::Env;

/// Orders and payments this cashier copy remembers having written itself, each: enough
/// to cover the moments its table lags behind, small enough to never matter.
pub const OWN_WRITES_MAX: usize = 10_000;
/// How often a payment looks again for an order the table has not seen yet.
const LOOKUP_POLL: Duration = Duration::from_millis(10);
/// Longest name written on a cup: a name, not a letter.
const NAME_CHARS_MAX: usize = 100;
/// Longest order id a payment's path may name (the cashier's own are 22 bytes).
pub const ORDER_ID_BYTES_MAX: usize = 64;

/// How the cashier decides and how long it waits; see the module docs of
/// [`coffee`](crate::coffee).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CashierConfig {
    /// Card numbers (as given in a payment's `card`) that are always declined, so a
    /// demo or a test can decline a payment on purpose.
    pub declined_cards: BTreeSet<String>,
    /// How long a payment waits for an order the cashier's table has not seen yet
    /// (placed at another cashier copy a moment ago) before answering 404.
    pub lookup_wait: Duration,
}

impl Default for CashierConfig {
    fn default() -> CashierConfig {
        CashierConfig {
            declined_cards: BTreeSet::from(["0000".to_string()]),
            lookup_wait: Duration::from_secs(1),
        }
    }
}

impl CashierConfig {
    /// The settings `declined_cards` (comma-separated; empty declines nothing) and
    /// `lookup_wait_ms`.
    pub fn from_env(env: &Env) -> Result<CashierConfig, Error> {
        let default = CashierConfig::default();
        let cards: String = env.setting("declined_cards", "0000".to_string())?;
        Ok(CashierConfig {
            declined_cards: cards
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
            lookup_wait: millis_setting(env, "lookup_wait_ms", default.lookup_wait)?,
        })
    }
}

/// An order as the cashier knows it: what it costs and whether it was paid. Folded
/// from the cashier's own two topics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CashierOrder {
    /// The price the payment asks.
    pub price_cents: u32,
    /// The first payment's outcome; any later one is refused (409).
    pub payment: Option<PaymentOutcome>,
}

fn orders_table() -> Table<CashierOrder> {
    Table::named("orders")
        .fold::<OrderPlaced>(|current: Option<CashierOrder>, e| {
            Some(CashierOrder {
                price_cents: e.price_cents,
                payment: current.and_then(|c| c.payment),
            })
        })
        .fold::<PaymentProcessed>(|current: Option<CashierOrder>, e| {
            // The topics are read independently: a payment may be applied before its
            // order. The first payment in log order is the one that counts.
            let mut order = current.unwrap_or(CashierOrder {
                price_cents: e.amount_cents,
                payment: None,
            });
            order.payment.get_or_insert(e.outcome);
            Some(order)
        })
}

/// The cashier: no handlers, a table of its own orders, and two commands
/// ([`cashier_api`]).
#[must_use]
pub fn cashier_service() -> Service {
    Service::new("cashier")
        .table(orders_table())
        .emits::<OrderPlaced>()
        .emits::<PaymentProcessed>()
}

/// The command `POST /orders`.
#[derive(Debug, Deserialize)]
struct PlaceOrder {
    /// Written on the cup.
    name: String,
    /// Checked against the menu in `validate`, so the refusal can list the menu.
    drink: String,
}

impl Command for PlaceOrder {
    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name must not be empty: the barista calls it out".into());
        }
        if self.name.chars().count() > NAME_CHARS_MAX {
            return Err(format!("name is longer than {NAME_CHARS_MAX} characters"));
        }
        if Drink::from_name(&self.drink).is_none() {
            return Err(format!(
                "{:?} is not on the menu; the menu: {}",
                self.drink,
                Drink::names()
            ));
        }
        Ok(())
    }
}

/// The body of the command `POST /orders/{id}/payment`; the order paid for (the
/// `order` of the 202) is the path's `{id}`.
#[derive(Debug, Deserialize)]
struct Pay {
    /// `card` or `cash`; checked in `validate`, so the refusal can say which are taken.
    method: String,
    /// The card's number (or its last digits), for card payments only.
    #[serde(default)]
    card: Option<String>,
}

impl Pay {
    fn method(&self) -> Option<PaymentMethod> {
        match self.method.as_str() {
            "card" => Some(PaymentMethod::Card),
            "cash" => Some(PaymentMethod::Cash),
            _ => None,
        }
    }
}

impl Command for Pay {
    fn validate(&self) -> Result<(), String> {
        match self.method() {
            None => Err(format!(
                "method must be \"card\" or \"cash\", not {:?}",
                self.method
            )),
            Some(PaymentMethod::Cash) if self.card.is_some() => {
                Err("a cash payment names no card".into())
            }
            Some(_) => Ok(()),
        }
    }
}

/// The cashier's HTTP API on `transport`; `handle` is a running [`cashier_service`].
///
/// | method | path | body | answer |
/// |---|---|---|---|
/// | POST | `/orders` | `{"name","drink"}` | 202 `{"order","name","drink","price_cents","id","ids"}` |
/// | POST | `/orders/{id}/payment` | `{"method":"card"\|"cash","card"?}` | 200 `{"order","outcome":"paid"\|"declined","method","amount_cents","id","ids"}`; 422 an `{id}` that is not 1 to [`ORDER_ID_BYTES_MAX`] letters, digits, `-`, `_` or `.`; 404 unknown order; 409 already paid |
/// | GET | `/menu` | | 200 `[{"drink","price_cents"}]` |
///
/// # Panics
///
/// If `handle` is not a cashier instance (it has no table of [`CashierOrder`]): a bug
/// in the wiring, found at start.
#[must_use]
pub fn cashier_api(
    transport: Arc<dyn Transport>,
    handle: &ServiceHandle,
    config: CashierConfig,
) -> ServiceApi {
    let orders = handle
        .table::<CashierOrder>("orders")
        .expect("cashier_api needs a running cashier_service");
    let till = Arc::new(Till {
        orders,
        config,
        own: Mutex::new(OwnWrites::default()),
    });
    let (placing, paying) = (till.clone(), till);
    ServiceApi::new(transport, "cashier")
        .command::<PlaceOrder, _, _>("/orders", move |cmd, out| {
            let till = placing.clone();
            async move { till.place(cmd, &out) }
        })
        .command_with::<Pay, _, _>(
            CommandMethod::Post,
            "/orders/{id}/payment",
            move |cmd, q: QueryInput, out| {
                let till = paying.clone();
                async move {
                    let order = q.param("id")?;
                    check_order_id(order).map_err(CommandError::unprocessable)?;
                    till.pay(order, cmd, &out).await
                }
            },
        )
        .query("/menu", |_| async {
            let menu: Vec<_> = MENU
                .iter()
                .map(|m| json!({"drink": m.drink, "price_cents": m.price_cents}))
                .collect();
            Ok(menu)
        })
}

/// What the commands share: the table, the settings and this copy's own writes.
struct Till {
    orders: TableRef<CashierOrder>,
    config: CashierConfig,
    own: Mutex<OwnWrites>,
}

/// What this copy wrote and its table may not show yet (read-your-writes).
#[derive(Default)]
struct OwnWrites {
    /// Orders placed here, with their price.
    placed: Recent<u32>,
    /// Orders paid here (claimed before the event is sent, so two concurrent payments
    /// of one order cannot both pass).
    paid: Recent<()>,
}

impl Till {
    fn place(&self, cmd: PlaceOrder, out: &Outbox) -> Result<Accepted, CommandError> {
        let drink = Drink::from_name(&cmd.drink).ok_or_else(|| {
            CommandError::unprocessable(format!("{:?} is not on the menu", cmd.drink))
        })?;
        let price_cents = drink.menu_item().price_cents;
        let order = new_order_id();
        let name = cmd.name.trim().to_string();
        self.own().placed.insert(order.clone(), price_cents);
        out.emit(&OrderPlaced {
            order: order.clone(),
            name: name.clone(),
            drink,
            price_cents,
        });
        Ok(Accepted::with_body(json!({
            "order": order,
            "name": name,
            "drink": drink,
            "price_cents": price_cents,
        })))
    }

    /// Pays for `order` (an id [`check_order_id`] accepted).
    async fn pay(&self, order: &str, cmd: Pay, out: &Outbox) -> Result<Accepted, CommandError> {
        let Some(price_cents) = self.find(order).await? else {
            return Err(CommandError::not_found(format!(
                "no order {order:?}: place it with POST /orders first"
            )));
        };
        let method = cmd.method().ok_or_else(|| {
            CommandError::unprocessable(format!("no payment method {:?}", cmd.method))
        })?;
        self.claim(order)?;
        let outcome = self.decide(method, cmd.card.as_deref());
        out.emit(&PaymentProcessed {
            order: order.to_string(),
            method,
            amount_cents: price_cents,
            outcome,
        });
        Ok(Accepted::with_status(
            200,
            json!({
                "order": order,
                "outcome": outcome,
                "method": method,
                "amount_cents": price_cents,
            }),
        ))
    }

    /// The order's price, from this copy's own writes or its table; an order neither
    /// has is looked for again until `lookup_wait` passes (it may have been placed at
    /// another copy a moment ago).
    async fn find(&self, order: &str) -> Result<Option<u32>, CommandError> {
        let deadline = Instant::now() + self.config.lookup_wait;
        loop {
            if let Some(price) = self.own().placed.get(order) {
                return Ok(Some(*price));
            }
            if let Some(o) = self.orders.get(order)? {
                return Ok(Some(o.price_cents));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(LOOKUP_POLL).await;
        }
    }

    /// Claims the order's one payment, or 409 if it was paid (here, or as the table
    /// shows). Checked and claimed under one lock: concurrent payments of one order
    /// at this copy cannot both pass.
    fn claim(&self, order: &str) -> Result<(), CommandError> {
        let mut own = self.own();
        let table = self.orders.get(order)?.and_then(|o| o.payment);
        if own.paid.get(order).is_some() || table.is_some() {
            return Err(CommandError::conflict(format!(
                "order {order:?} has been paid for already (or declined: a declined drink is written off)"
            )));
        }
        own.paid.insert(order.to_string(), ());
        Ok(())
    }

    fn decide(&self, method: PaymentMethod, card: Option<&str>) -> PaymentOutcome {
        match (method, card) {
            (PaymentMethod::Card, Some(card)) if self.config.declined_cards.contains(card) => {
                PaymentOutcome::Declined
            }
            _ => PaymentOutcome::Paid,
        }
    }

    fn own(&self) -> std::sync::MutexGuard<'_, OwnWrites> {
        // The guarded maps stay consistent even if a holder panicked (each change is
        // one insert), so a poisoned lock is still usable.
        self.own.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Checks the order id of a payment's path: it is looked up as a record key and
/// written into the event, so it is held to what the cashier's own ids use.
fn check_order_id(order: &str) -> Result<(), String> {
    if order.is_empty() || order.len() > ORDER_ID_BYTES_MAX {
        return Err(format!(
            "order {order:?} is not an order id: an order id has 1 to {ORDER_ID_BYTES_MAX} bytes"
        ));
    }
    if let Some(c) = order
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "order {order:?} is not an order id: it may hold only letters, digits, '-', '_' and '.', not {c:?}"
        ));
    }
    Ok(())
}

/// A map that forgets its oldest keys beyond [`OWN_WRITES_MAX`].
struct Recent<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<V> Recent<V> {
    fn insert(&mut self, key: String, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > OWN_WRITES_MAX {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }
}

/// A fresh order id: `o-<ms since the epoch, hex>-<32 random bits, hex>`. The time
/// first makes the counter's list (in key order) roughly the order of arrival; the
/// random part keeps copies of the cashier from colliding.
fn new_order_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let random = SplitMix64::from_entropy().next_u64() & 0xffff_ffff;
    format!("o-{ms:011x}-{random:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_forgets_the_oldest_beyond_its_bound() {
        let mut r = Recent::default();
        for i in 0..=OWN_WRITES_MAX {
            r.insert(format!("k{i}"), i);
        }
        assert_eq!(r.get("k0"), None);
        assert_eq!(r.get("k1"), Some(&1));
        assert_eq!(r.map.len(), OWN_WRITES_MAX);
    }

    #[test]
    fn order_ids_are_distinct_and_sort_by_time() {
        let a = new_order_id();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_order_id();
        assert_ne!(a, b);
        assert!(a < b, "{a} < {b}");
    }

    #[test]
    fn commands_validate_against_the_menu() {
        let ok: PlaceOrder = serde_json::from_str(r#"{"name":"Ada","drink":"latte"}"#).unwrap();
        assert_eq!(ok.validate(), Ok(()));
        let mocha: PlaceOrder = serde_json::from_str(r#"{"name":"Ada","drink":"mocha"}"#).unwrap();
        assert!(mocha.validate().unwrap_err().contains("black_coffee"));
        let blank: PlaceOrder = serde_json::from_str(r#"{"name":" ","drink":"latte"}"#).unwrap();
        assert!(blank.validate().is_err());
        let cash: Pay = serde_json::from_str(r#"{"method":"cash","card":"1"}"#).unwrap();
        assert!(cash.validate().is_err());
        let card: Pay = serde_json::from_str(r#"{"method":"card","card":"4242"}"#).unwrap();
        assert_eq!(card.validate(), Ok(()));
    }

    #[test]
    fn order_ids_in_a_path_are_checked() {
        assert_eq!(check_order_id(&new_order_id()), Ok(()));
        assert_eq!(check_order_id("o-1"), Ok(()));
        for bad in ["", "a b", "o/1", "ö", &"o".repeat(ORDER_ID_BYTES_MAX + 1)] {
            let e = check_order_id(bad).unwrap_err();
            assert!(e.contains(&format!("order {bad:?}")), "{bad:?}: {e}");
        }
    }
}
