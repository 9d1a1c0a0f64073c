//! # The coffee shop: the first essay's Starbucks, as three services
//!
//! The essay's sequence, step by step: you order; the cashier writes your name and
//! drink on the cup and puts it in the queue; while a barista prepares it, you pay; then
//! your drink is ready, or you wait. Three services, none of which calls another:
//!
//! - [`cashier`](cashier_service): takes the order (`POST /orders`, a command answered
//!   202 at once, emitting `orderPlaced`: the cup in the queue) and the payment
//!   (`POST /orders/{id}/payment`, the essay's example of a *command*, answered
//!   synchronously with paid or declined, emitting `paymentProcessed` whether card or
//!   cash).
//! - [`barista`](barista_service): copies of one consumer group compete for the cups
//!   (*competing consumers*); each drink takes its time (a black coffee is quick, a
//!   frappuccino is not) and ends with `drinkReady`, naming the barista.
//! - [`counter`](counter_service): the *query* side. It folds `orderPlaced`,
//!   `drinkStarted`, `drinkReady` and `paymentProcessed` into its own table of each
//!   order's status and serves it (`GET /orders/{id}`, `GET /orders`, `GET /summary`).
//!   Nobody asks the barista.
//!
//! ## The picture
//!
//! ```text
//!  POST /orders {name, drink}    POST /orders/{id}/payment {method, card?}
//!          |   202 {order}                   |   200 {outcome: paid|declined}
//!          v                                 v
//!     +---------------------------------------------+
//!     |                   cashier                   |  own table of orders
//!     +---------------------------------------------+  (built from both topics)
//!          | orderPlaced                     | paymentProcessed
//!          v                                 v
//!    [coffee.orders]                  [coffee.payments]
//!       |        \                           |
//!       |         \  (group "barista":       |
//!       |          \  one copy per cup)      |
//!       |     +-----------+ +-----------+    |
//!       |     | barista b1| | barista b2|    |
//!       |     +-----------+ +-----------+    |
//!       |          \ drinkStarted, drinkReady|
//!       |           v                        |
//!       |     [coffee.drinks]                |
//!       v           v                        v
//!     +---------------------------------------------+
//!     |  counter: table of every order's status     |  GET /orders/{id}
//!     +---------------------------------------------+  GET /orders, GET /summary
//! ```
//!
//! Topics are named after the facts they hold, under `coffee.` so that the coffee shop
//! and the second essay's shop (whose `orders` topic holds `orderCreated`) can share one
//! broker in `runnel demo` without reading each other's orders. Every event is keyed by
//! the order id, so the facts of one order stay in order within each topic.
//!
//! ## Events (JSON values; `ce_type` in the headers)
//!
//! | type | topic | value |
//! |---|---|---|
//! | `orderPlaced` | `coffee.orders` | `{"order":"o-…","name":"Ada","drink":"latte","price_cents":390}` |
//! | `paymentProcessed` | `coffee.payments` | `{"order":"o-…","method":"card","amount_cents":390,"outcome":"paid"}` (`method`: `card`/`cash`; `outcome`: `paid`/`declined`) |
//! | `drinkStarted` | `coffee.drinks` | `{"order":"o-…","name":"Ada","drink":"latte","barista":"b1"}` |
//! | `drinkReady` | `coffee.drinks` | `{"order":"o-…","name":"Ada","drink":"latte","barista":"b1"}` |
//!
//! ## HTTP (besides `/health/live`, `/health/ready` and `/metrics` on every service)
//!
//! | service | route | answer |
//! |---|---|---|
//! | cashier | `POST /orders {"name","drink"}` | 202 `{"order","name","drink","price_cents","id","ids"}` (`order` is the order id; `id` the event's) |
//! | cashier | `POST /orders/{id}/payment {"method":"card"\|"cash","card"?}` | 200 `{"order","outcome":"paid"\|"declined","method","amount_cents","id","ids"}`; 422 a malformed `{id}`; 404 unknown order; 409 paid already |
//! | cashier | `GET /menu` | 200 `[{"drink","price_cents"}]` |
//! | counter | `GET /orders/{id}` | 200 [`OrderView`]; 404 not seen (yet) |
//! | counter | `GET /orders?from=&limit=` | 200 `{"orders":[OrderView…],"next"}` in id order (≈ arrival order) |
//! | counter | `GET /summary` | 200 counts by status and `drinks_by_barista` |
//!
//! Refusals are `{"error": message, "code": code}`: 400 `bad_json` (malformed, a
//! missing field), 415 (not JSON), 422 `invalid_command` (a drink not on the menu, an
//! empty name, a method other than card or cash, an order id in a payment's path that
//! is not 1 to [`ORDER_ID_BYTES_MAX`] letters, digits, `-`, `_` or `.`), 404
//! `not_found`, 409 `conflict`.
//!
//! ## Design choices
//!
//! **Declining a payment is deterministic.** Cash is always taken. A card payment may
//! name the card (`"card": "4242"`, the digits a terminal shows); the cards listed in
//! the cashier's setting `declined_cards` (comma-separated, default `0000`) are
//! declined, as payment gateways keep test cards that always decline. A declined
//! payment is still a processed payment: 200 with `"outcome": "declined"`, and the same
//! `paymentProcessed` event.
//!
//! **A declined payment for a drink already made is written off.** The essay's source
//! (Hohpe, "Starbucks does not use two-phase commit") names write-off, retry and
//! compensation; Starbucks writes off: the drink is poured away. Because the barista
//! never waits for the payment (that is the essay's point: you pay *while* the drink is
//! being made), a declined order's drink is made anyway, and the counter marks it
//! `"written_off": true` once it has seen both facts, in whichever order they arrive.
//! Nothing else happens and no event is needed: the loss is one drink, cheaper than any
//! machinery to avoid it. A declined order stays declined (a second payment is 409, as
//! every second payment is), so there is no retry either.
//!
//! **Read-your-writes at the cashier.** The cashier's table of orders is built from its
//! own topics and may lag a 202 by milliseconds, so a payment sent right after the
//! order could miss it. The cashier therefore also remembers the orders it placed and
//! the payments it took itself (the last [`OWN_WRITES_MAX`] of each, in memory), and
//! for an order it has not seen it retries the table lookup for up to `lookup_wait_ms`
//! (default 1000) before answering 404: that covers an order placed at another cashier
//! copy. What is left: two payments for one order at two *different* cashier copies
//! within that lag can both be taken; the counter keeps the first in log order (both
//! are keyed by the order, so they are ordered). A payment whose event could not be
//! stored (503) stays claimed on that copy: a payment is never taken twice.
//!
//! **At least once, de-duplicated by order id.** A barista killed mid-drink has not
//! committed that cup, so another copy makes it once the group notices (its session
//! times out). Drinks it made but had not committed yet are made a second time; the
//! counter keeps the first `drinkReady` per order and ignores the rest.
//!
//! **"Preparing" is stated when the barista starts.** Events a handler emits leave only
//! once it returns, so `drinkStarted` is sent straight to the log at the start of the
//! drink (best effort: the drink matters more than the progress note).
//!
//! ## Where this differs from the issue and the essay
//!
//! - The essay gives a black coffee about 5 s; the default preparation times are
//!   scaled down for the demo (`prep.<drink>_ms` settings restore any taste).
//! - The issue's status is "paid or not"; following the essay's source we also show
//!   `declined` and `written_off`.
//!
//! ## Settings (`--set name=value`)
//!
//! | service | setting | default | why |
//! |---|---|---|---|
//! | cashier | `declined_cards` | `0000` | the cards that decline, so a demo can show a declined payment |
//! | cashier | `lookup_wait_ms` | 1000 | how long a payment waits for an order the cashier's table has not seen yet |
//! | barista | `prep.<drink>_ms` | see [`MENU`] | simulated preparation time of each drink |

mod barista;
mod cashier;
mod counter;

use std::time::Duration;

use runnel_services::http::ServiceApi;
use runnel_services::{Error, ServiceHandle};

pub use barista::{Barista, PrepTimes, barista_service};
pub use cashier::{
    CashierConfig, CashierOrder, ORDER_ID_BYTES_MAX, OWN_WRITES_MAX, cashier_api, cashier_service,
};
pub use counter::{DrinkStatus, OrderView, PaymentStatus, counter_api, counter_service};
pub use events::{
    DrinkReady, DrinkStarted, OrderPlaced, PaymentMethod, PaymentOutcome, PaymentProcessed,
};

use crate::{Env, Running};

/// What the shop sells: each drink, its price and how long it takes by default.
pub const MENU: &[MenuItem] = &[
    MenuItem {
        drink: Drink::BlackCoffee,
        price_cents: 250,
        prep_ms: 100,
    },
    MenuItem {
        drink: Drink::Espresso,
        price_cents: 280,
        prep_ms: 250,
    },
    MenuItem {
        drink: Drink::Latte,
        price_cents: 390,
        prep_ms: 600,
    },
    MenuItem {
        drink: Drink::Cappuccino,
        price_cents: 390,
        prep_ms: 600,
    },
    MenuItem {
        drink: Drink::Frappuccino,
        price_cents: 520,
        prep_ms: 1500,
    },
];

/// One line of the [`MENU`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MenuItem {
    /// The drink.
    pub drink: Drink,
    /// What it costs: the amount a payment takes.
    pub price_cents: u32,
    /// How long a barista takes by default: the essay's point is that drinks differ.
    pub prep_ms: u64,
}

/// A drink on the [`MENU`]; in JSON its snake_case name (`"black_coffee"`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Drink {
    /// "Just pour a coffee in the cup": the essay's quick drink.
    BlackCoffee,
    /// Quick, but pulled by hand.
    Espresso,
    /// Espresso and steamed milk.
    Latte,
    /// Espresso and milk foam.
    Cappuccino,
    /// "Takes an effort and time": the essay's slow drink.
    Frappuccino,
}

impl Drink {
    /// Its name as the JSON and the settings spell it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Drink::BlackCoffee => "black_coffee",
            Drink::Espresso => "espresso",
            Drink::Latte => "latte",
            Drink::Cappuccino => "cappuccino",
            Drink::Frappuccino => "frappuccino",
        }
    }

    /// The drink called `name`, if the menu has it.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Drink> {
        MENU.iter().map(|m| m.drink).find(|d| d.name() == name)
    }

    /// Its line on the menu.
    #[must_use]
    pub fn menu_item(self) -> MenuItem {
        // Every variant has exactly one line (the test below checks it): a miss is a
        // bug in MENU, and answering with another drink's price would hide it.
        MENU.iter()
            .copied()
            .find(|m| m.drink == self)
            .expect("every drink has a line on the menu")
    }

    /// Every drink's name, for error messages.
    #[must_use]
    pub fn names() -> String {
        MENU.iter()
            .map(|m| m.drink.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The facts of the coffee shop: the contracts between its services.
pub mod events {
    use serde::{Deserialize, Serialize};

    use super::Drink;

    /// The cups waiting for a barista.
    pub const ORDERS_TOPIC: &str = "coffee.orders";
    /// The payments taken.
    pub const PAYMENTS_TOPIC: &str = "coffee.payments";
    /// What the baristas did.
    pub const DRINKS_TOPIC: &str = "coffee.drinks";

    /// The cup in the queue: the cashier wrote the name and the drink on it.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OrderPlaced {
        /// The order's id, chosen by the cashier; every later fact names it.
        pub order: String,
        /// The name on the cup: what the barista calls out.
        pub name: String,
        /// What to make.
        pub drink: Drink,
        /// The price at the time of the order, so a payment needs no menu lookup.
        pub price_cents: u32,
    }
    runnel_services::event!(OrderPlaced, type = "orderPlaced", topic = ORDERS_TOPIC, key = |e| e.order.clone());

    /// How a customer paid. The event is the same either way, as the essay says.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum PaymentMethod {
        /// A card, which can be declined.
        Card,
        /// Cash, which is always taken.
        Cash,
    }

    /// What came of a payment.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum PaymentOutcome {
        /// The money was taken.
        Paid,
        /// The card was refused: the drink will be written off.
        Declined,
    }

    /// A payment was processed, whichever the method and whatever the outcome.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PaymentProcessed {
        /// The order paid for.
        pub order: String,
        /// Card or cash: data, not a different event.
        pub method: PaymentMethod,
        /// The amount asked: the order's price.
        pub amount_cents: u32,
        /// Paid or declined.
        pub outcome: PaymentOutcome,
    }
    runnel_services::event!(PaymentProcessed, type = "paymentProcessed", topic = PAYMENTS_TOPIC, key = |e| e.order.clone());

    /// A barista took the cup from the queue and started on it.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DrinkStarted {
        /// The order.
        pub order: String,
        /// The name on the cup.
        pub name: String,
        /// The drink being made.
        pub drink: Drink,
        /// Which barista (its instance name): the counter shows who is on it.
        pub barista: String,
    }
    runnel_services::event!(DrinkStarted, type = "drinkStarted", topic = DRINKS_TOPIC, key = |e| e.order.clone());

    /// The drink is on the counter and the barista called the name.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DrinkReady {
        /// The order.
        pub order: String,
        /// The name called out.
        pub name: String,
        /// The drink made.
        pub drink: Drink,
        /// Which barista made it (its instance name), so drinks can be counted per
        /// barista.
        pub barista: String,
    }
    runnel_services::event!(DrinkReady, type = "drinkReady", topic = DRINKS_TOPIC, key = |e| e.order.clone());
}

/// Starts the coffee service `name` (`cashier`, `barista` or `counter`) on `env`.
pub async fn start(name: &str, env: &Env) -> Result<Running, Error> {
    let runtime = env.runtime();
    match name {
        "cashier" => {
            let config = CashierConfig::from_env(env)?;
            let handle = ready(runtime.start(cashier_service(), &env.instance).await?).await?;
            let api = cashier_api(env.transport.clone(), &handle, config);
            Running::serve(env, handle, api).await
        }
        "barista" => {
            let prep = PrepTimes::from_env(env)?;
            let service = barista_service(&env.instance, prep, env.transport.clone());
            let handle = ready(runtime.start(service, &env.instance).await?).await?;
            // No commands: it serves health and metrics, so a driver can see it is up.
            let api = ServiceApi::new(env.transport.clone(), "barista");
            Running::serve(env, handle, api).await
        }
        "counter" => {
            let handle = ready(runtime.start(counter_service(), &env.instance).await?).await?;
            let api = counter_api(env.transport.clone(), &handle);
            Running::serve(env, handle, api).await
        }
        other => Err(Error::Config(format!(
            "the coffee shop has no service {other:?}; it has cashier, barista and counter"
        ))),
    }
}

/// Waits until the instance's tables caught up: its API must not answer from a
/// half-restored table.
async fn ready(mut handle: ServiceHandle) -> Result<ServiceHandle, Error> {
    handle.wait_ready().await?;
    Ok(handle)
}

/// Reads a duration setting in milliseconds.
fn millis_setting(env: &Env, name: &str, default: Duration) -> Result<Duration, Error> {
    let ms: u64 = env.setting(name, u64::try_from(default.as_millis()).unwrap_or(u64::MAX))?;
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drink_has_one_menu_line_and_its_name_round_trips() {
        for d in [
            Drink::BlackCoffee,
            Drink::Espresso,
            Drink::Latte,
            Drink::Cappuccino,
            Drink::Frappuccino,
        ] {
            assert_eq!(MENU.iter().filter(|m| m.drink == d).count(), 1, "{d:?}");
            assert_eq!(Drink::from_name(d.name()), Some(d));
            assert_eq!(
                serde_json::to_value(d).unwrap(),
                serde_json::Value::String(d.name().into())
            );
        }
        assert_eq!(Drink::from_name("mocha"), None);
    }
}
