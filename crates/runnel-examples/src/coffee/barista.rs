//! The barista: takes the next cup from the queue and makes the drink.
//!
//! Every copy joins the consumer group `barista`, so the copies share the cups:
//! *competing consumers*. A copy makes one drink at a time (concurrency 1), as a
//! person with two hands does; run more copies to make more at once. Preparation is
//! simulated by waiting the drink's time.
//!
//! A copy killed mid-drink has not committed that cup: once the group notices (the
//! session times out) another copy gets the partition and makes it. Delivery is at
//! least once, so a drink the dead copy made but had not committed yet is made again;
//! the counter keeps the first `drinkReady` of each order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use runnel_services::{
    Emitter, Error, HandlerError, Meta, Service, SplitMix64, State, TraceParent, Transport,
    event_record, fresh_event_id,
};
use tracing::{info, warn};

use super::events::{DrinkReady, DrinkStarted, OrderPlaced};
use super::{Drink, MENU, millis_setting};
use crate::Env;

/// Beyond the longest preparation, how long a drink may take before the runtime counts
/// it as stuck (a transient failure, and the cup is tried again).
const HANDLER_SLACK: Duration = Duration::from_secs(30);

/// How long each drink takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepTimes {
    /// By drink; every drink on the menu has one.
    by_drink: BTreeMap<Drink, Duration>,
}

impl Default for PrepTimes {
    /// The menu's times ([`MENU`](super::MENU)).
    fn default() -> PrepTimes {
        PrepTimes {
            by_drink: MENU
                .iter()
                .map(|m| (m.drink, Duration::from_millis(m.prep_ms)))
                .collect(),
        }
    }
}

impl PrepTimes {
    /// Every drink takes `d` (tests that want a steady pace).
    #[must_use]
    pub fn uniform(d: Duration) -> PrepTimes {
        PrepTimes {
            by_drink: MENU.iter().map(|m| (m.drink, d)).collect(),
        }
    }

    /// `drink` takes `d`.
    #[must_use]
    pub fn with(mut self, drink: Drink, d: Duration) -> PrepTimes {
        self.by_drink.insert(drink, d);
        self
    }

    /// The menu's times, overridden by the settings `prep.<drink>_ms`
    /// (`prep.frappuccino_ms=3000`).
    pub fn from_env(env: &Env) -> Result<PrepTimes, Error> {
        let mut prep = PrepTimes::default();
        for m in MENU {
            let name = format!("prep.{}_ms", m.drink.name());
            let d = millis_setting(env, &name, Duration::from_millis(m.prep_ms))?;
            prep = prep.with(m.drink, d);
        }
        Ok(prep)
    }

    /// How long `drink` takes.
    #[must_use]
    pub fn of(&self, drink: Drink) -> Duration {
        self.by_drink.get(&drink).copied().unwrap_or_default()
    }

    fn longest(&self) -> Duration {
        self.by_drink.values().copied().max().unwrap_or_default()
    }
}

/// A barista copy's state: who it is and how long drinks take.
#[derive(Clone)]
pub struct Barista {
    /// Its instance name, stated in `drinkStarted` and `drinkReady` so drinks can be
    /// counted per barista.
    instance: Arc<str>,
    prep: Arc<PrepTimes>,
    /// Where `drinkStarted` goes at once (emitted events leave only when the drink is
    /// done).
    transport: Arc<dyn Transport>,
}

impl std::fmt::Debug for Barista {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barista")
            .field("instance", &self.instance)
            .field("prep", &self.prep)
            .finish_non_exhaustive()
    }
}

/// A barista copy named `instance` (unique among the copies: it is what `drinkReady`
/// names), taking `prep` per drink, sending `drinkStarted` on `transport`.
#[must_use]
pub fn barista_service(
    instance: &str,
    prep: PrepTimes,
    transport: Arc<dyn Transport>,
) -> Service<Barista> {
    let timeout = prep.longest() + HANDLER_SLACK;
    let barista = Barista {
        instance: Arc::from(instance),
        prep: Arc::new(prep),
        transport,
    };
    Service::with_state("barista", barista)
        .on::<OrderPlaced, _>(make_drink)
        .emits::<DrinkStarted>()
        .emits::<DrinkReady>()
        .concurrency(1)
        .handler_timeout(timeout)
}

/// One cup: say so, make it, call the name.
async fn make_drink(
    order: OrderPlaced,
    meta: Meta,
    emit: Emitter,
    State(barista): State<Barista>,
) -> Result<(), HandlerError> {
    barista.announce(&order, &meta).await;
    tokio::time::sleep(barista.prep.of(order.drink)).await;
    info!(order = %order.order, drink = order.drink.name(), barista = %barista.instance, "drink ready");
    emit.emit(&DrinkReady {
        order: order.order,
        name: order.name,
        drink: order.drink,
        barista: barista.instance.to_string(),
    });
    Ok(())
}

impl Barista {
    /// Sends `drinkStarted` now, so the counter can show "preparing". Best effort: a
    /// failure is logged and the drink made anyway, since the drink is what matters.
    /// The id is fresh, not derived from the input: a second start after a crash is a
    /// second fact (another barista took the cup), not a duplicate.
    async fn announce(&self, order: &OrderPlaced, meta: &Meta) {
        let started = DrinkStarted {
            order: order.order.clone(),
            name: order.name.clone(),
            drink: order.drink,
            barista: self.instance.to_string(),
        };
        let mut rng = SplitMix64::from_entropy();
        let mut next = || rng.next_u64();
        let trace = match &meta.traceparent {
            Some(t) => t.child(&mut next),
            None => TraceParent::new_root(&mut next),
        };
        let record = event_record(&started, &fresh_event_id("barista"), "barista", &trace);
        if let Err(e) = self.transport.send(vec![record]).await {
            warn!(%e, order = %order.order, "drinkStarted not sent; making the drink anyway");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prep_times_default_to_the_menu_and_can_be_overridden() {
        let p = PrepTimes::default();
        assert!(p.of(Drink::BlackCoffee) < p.of(Drink::Frappuccino));
        let p = p.with(Drink::BlackCoffee, Duration::from_secs(5));
        assert_eq!(p.of(Drink::BlackCoffee), Duration::from_secs(5));
        assert_eq!(p.longest(), Duration::from_secs(5));
        let u = PrepTimes::uniform(Duration::from_millis(7));
        assert_eq!(u.of(Drink::Latte), Duration::from_millis(7));
    }
}
