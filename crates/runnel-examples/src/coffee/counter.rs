//! The counter: where you wait for your drink, and the shop's query side.
//!
//! It folds every fact about an order into one row of its own table and serves the
//! rows. It never asks the barista or the cashier: "is my drink ready?" is answered
//! from the events alone, so it keeps answering while they are down (with what it has
//! seen so far).
//!
//! The facts come from three topics read independently, so they may be applied in any
//! order (a payment before its order, say). Every fold is written to give the same row
//! whatever the order: fields only move forward (queued, preparing, ready; unpaid, then
//! paid or declined) and the first `drinkReady` and the first payment of an order win.
//! That is also the de-duplication of at-least-once: a drink made twice after a
//! barista crash changes nothing the second time.

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_services::http::ServiceApi;
use runnel_services::{CommandError, Service, ServiceHandle, Table, TableRef, Transport};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Drink;
use super::events::{
    DrinkReady, DrinkStarted, OrderPlaced, PaymentMethod, PaymentOutcome, PaymentProcessed,
};

/// Rows `GET /orders` returns unless asked for fewer.
const LIST_LIMIT_DEFAULT: usize = 100;
/// Most rows one `GET /orders` returns.
const LIST_LIMIT_MAX: usize = 1000;
/// Most rows `GET /summary` reads: a summary of a day's orders, not of all time.
const SUMMARY_ORDERS_MAX: usize = 100_000;
/// Rows read per scan while summarising.
const SUMMARY_PAGE: usize = 1000;

/// Where the drink is. Ordered: a row only moves forward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrinkStatus {
    /// The cup is in the queue.
    #[default]
    Queued,
    /// A barista has it (`drinkStarted`).
    Preparing,
    /// On the counter (`drinkReady`).
    Ready,
}

/// Whether the order was paid for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// No payment yet: the drink waits on the counter.
    #[default]
    Unpaid,
    /// Paid.
    Paid,
    /// The card was declined: the drink is written off once made.
    Declined,
}

/// One order as the counter sees it; served as JSON by `GET /orders/{id}`:
/// `{"order","name","drink","placed","drink_status","barista","payment","method","written_off"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    /// The order's id.
    pub order: String,
    /// The name on the cup (from the order, or from the barista if that came first).
    pub name: Option<String>,
    /// The drink.
    pub drink: Option<Drink>,
    /// Whether `orderPlaced` itself has been seen (the other facts can come first).
    pub placed: bool,
    /// Queued, preparing or ready.
    pub drink_status: DrinkStatus,
    /// The barista on it while preparing; the first to finish it once ready.
    pub barista: Option<String>,
    /// Unpaid, paid or declined.
    pub payment: PaymentStatus,
    /// How it was paid, once it was.
    pub method: Option<PaymentMethod>,
    /// Made, and the payment declined: the drink is poured away (the write-off).
    pub written_off: bool,
}

impl OrderView {
    fn of(current: Option<OrderView>, order: &str) -> OrderView {
        current.unwrap_or_else(|| OrderView {
            order: order.to_string(),
            ..OrderView::default()
        })
    }

    fn cup(&mut self, name: &str, drink: Drink) {
        self.name.get_or_insert_with(|| name.to_string());
        self.drink.get_or_insert(drink);
    }

    /// Recomputes what depends on several facts; called after every fold.
    fn settle(mut self) -> Option<OrderView> {
        self.written_off =
            self.drink_status == DrinkStatus::Ready && self.payment == PaymentStatus::Declined;
        Some(self)
    }
}

fn orders_table() -> Table<OrderView> {
    Table::named("orders")
        .fold::<OrderPlaced>(on_placed)
        .fold::<DrinkStarted>(on_started)
        .fold::<DrinkReady>(on_ready)
        .fold::<PaymentProcessed>(on_payment)
}

fn on_placed(cur: Option<OrderView>, e: &OrderPlaced) -> Option<OrderView> {
    let mut v = OrderView::of(cur, &e.order);
    // The order's own words win over the barista's copy of them.
    v.name = Some(e.name.clone());
    v.drink = Some(e.drink);
    v.placed = true;
    v.settle()
}

fn on_started(cur: Option<OrderView>, e: &DrinkStarted) -> Option<OrderView> {
    let mut v = OrderView::of(cur, &e.order);
    v.cup(&e.name, e.drink);
    // A second start (after a crash) names the barista now on it; once ready, starts
    // are old news.
    if v.drink_status < DrinkStatus::Ready {
        v.drink_status = DrinkStatus::Preparing;
        v.barista = Some(e.barista.clone());
    }
    v.settle()
}

fn on_ready(cur: Option<OrderView>, e: &DrinkReady) -> Option<OrderView> {
    let mut v = OrderView::of(cur, &e.order);
    v.cup(&e.name, e.drink);
    // The first drinkReady wins: a drink made again after a crash changes nothing.
    if v.drink_status < DrinkStatus::Ready {
        v.drink_status = DrinkStatus::Ready;
        v.barista = Some(e.barista.clone());
    }
    v.settle()
}

fn on_payment(cur: Option<OrderView>, e: &PaymentProcessed) -> Option<OrderView> {
    let mut v = OrderView::of(cur, &e.order);
    // The first payment in log order counts (both cashier copies key it by order).
    if v.payment == PaymentStatus::Unpaid {
        v.payment = match e.outcome {
            PaymentOutcome::Paid => PaymentStatus::Paid,
            PaymentOutcome::Declined => PaymentStatus::Declined,
        };
        v.method = Some(e.method);
    }
    v.settle()
}

/// The counter: no handlers, one table folded from every topic of the shop.
#[must_use]
pub fn counter_service() -> Service {
    Service::new("counter").table(orders_table())
}

/// The counter's HTTP API; `handle` is a running [`counter_service`]. Answers are
/// eventually consistent: an order placed a moment ago may be 404 for a moment.
///
/// | method | path | answer |
/// |---|---|---|
/// | GET | `/orders/{id}` | 200 [`OrderView`]; 404 if not seen (yet) |
/// | GET | `/orders?from=&limit=` | 200 `{"orders":[OrderView…],"next":id\|null}` in id order (≈ arrival order) |
/// | GET | `/summary` | 200 `{"orders","queued","preparing","ready","paid","declined","unpaid","written_off","drinks_by_barista":{name: n}}` |
///
/// # Panics
///
/// If `handle` is not a counter instance: a bug in the wiring, found at start.
#[must_use]
pub fn counter_api(transport: Arc<dyn Transport>, handle: &ServiceHandle) -> ServiceApi {
    let orders = handle
        .table::<OrderView>("orders")
        .expect("counter_api needs a running counter_service");
    let (one, list, summary) = (orders.clone(), orders.clone(), orders);
    ServiceApi::new(transport, "counter")
        .query("/orders/{id}", move |q| {
            let orders = one.clone();
            async move {
                let id = q.param("id")?;
                orders.get(id)?.ok_or_else(|| {
                    CommandError::not_found(format!(
                        "the counter has not seen order {id:?} (yet: it may have just been placed)"
                    ))
                })
            }
        })
        .query("/orders", move |q| {
            let orders = list.clone();
            async move {
                let limit = match q.query("limit") {
                    None => LIST_LIMIT_DEFAULT,
                    Some(l) => l.parse::<usize>().map_err(|_| {
                        CommandError::bad_request(format!("limit {l:?} is not a number"))
                    })?,
                }
                .clamp(1, LIST_LIMIT_MAX);
                let mut rows = orders.scan(q.query("from"), limit + 1)?;
                let next = (rows.len() > limit).then(|| rows.remove(limit).0);
                let rows: Vec<OrderView> = rows.into_iter().map(|(_, v)| v).collect();
                Ok(json!({"orders": rows, "next": next}))
            }
        })
        .query("/summary", move |_| {
            let orders = summary.clone();
            async move { summarise(&orders) }
        })
}

/// Counts the rows: what the demo prints at the end (drinks per barista).
fn summarise(orders: &TableRef<OrderView>) -> Result<serde_json::Value, CommandError> {
    let mut by_barista: BTreeMap<String, u64> = BTreeMap::new();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut from: Option<String> = None;
    let mut seen = 0;
    while seen < SUMMARY_ORDERS_MAX {
        let page = orders.scan(from.as_deref(), SUMMARY_PAGE + 1)?;
        let more = page.len() > SUMMARY_PAGE;
        for (key, v) in page.into_iter().take(SUMMARY_PAGE) {
            seen += 1;
            *counts.entry("orders").or_default() += 1;
            let drink = match v.drink_status {
                DrinkStatus::Queued => "queued",
                DrinkStatus::Preparing => "preparing",
                DrinkStatus::Ready => "ready",
            };
            *counts.entry(drink).or_default() += 1;
            let payment = match v.payment {
                PaymentStatus::Unpaid => "unpaid",
                PaymentStatus::Paid => "paid",
                PaymentStatus::Declined => "declined",
            };
            *counts.entry(payment).or_default() += 1;
            if v.written_off {
                *counts.entry("written_off").or_default() += 1;
            }
            if let (DrinkStatus::Ready, Some(b)) = (v.drink_status, v.barista) {
                *by_barista.entry(b).or_default() += 1;
            }
            from = Some(key);
        }
        if !more {
            break;
        }
        // `from` is inclusive: continue just after the last key read.
        from = from.map(|k| format!("{k}\0"));
    }
    let mut out = serde_json::Map::new();
    for k in [
        "orders",
        "queued",
        "preparing",
        "ready",
        "paid",
        "declined",
        "unpaid",
        "written_off",
    ] {
        out.insert(k.into(), json!(counts.get(k).copied().unwrap_or(0)));
    }
    out.insert("drinks_by_barista".into(), json!(by_barista));
    Ok(serde_json::Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed() -> OrderPlaced {
        OrderPlaced {
            order: "o1".into(),
            name: "Ada".into(),
            drink: Drink::Latte,
            price_cents: 390,
        }
    }

    fn ready(barista: &str) -> DrinkReady {
        DrinkReady {
            order: "o1".into(),
            name: "Ada".into(),
            drink: Drink::Latte,
            barista: barista.into(),
        }
    }

    fn declined() -> PaymentProcessed {
        PaymentProcessed {
            order: "o1".into(),
            method: PaymentMethod::Card,
            amount_cents: 390,
            outcome: PaymentOutcome::Declined,
        }
    }

    enum Fact {
        Placed(OrderPlaced),
        Ready(DrinkReady),
        Paid(PaymentProcessed),
    }

    /// Applies the table's own folds, in the order given.
    fn fold(facts: &[Fact]) -> OrderView {
        facts
            .iter()
            .fold(None, |v, f| match f {
                Fact::Placed(e) => on_placed(v, e),
                Fact::Ready(e) => on_ready(v, e),
                Fact::Paid(e) => on_payment(v, e),
            })
            .unwrap()
    }

    #[test]
    fn the_row_is_the_same_whatever_order_the_facts_arrive_in() {
        let a = fold(&[
            Fact::Placed(placed()),
            Fact::Ready(ready("b1")),
            Fact::Paid(declined()),
            Fact::Ready(ready("b2")),
        ]);
        let b = fold(&[
            Fact::Paid(declined()),
            Fact::Ready(ready("b1")),
            Fact::Ready(ready("b2")),
            Fact::Placed(placed()),
        ]);
        assert_eq!(a, b);
        assert!(a.written_off);
        assert_eq!(
            a.barista.as_deref(),
            Some("b1"),
            "the first drinkReady wins"
        );
    }
}
