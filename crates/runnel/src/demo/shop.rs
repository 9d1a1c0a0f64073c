//! The shop's story (the second essay, Figure 3): orders go out while notifications is
//! down, while customers is down, and before their customer is known; every order is
//! notified exactly once in the end.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Idea, Stage, Story, call, eventually};
use crate::demo::procs::Proc;

/// How long a notification may take to appear.
const NOTIFY_WAIT: Duration = Duration::from_secs(45);

fn customer(name: &str) -> Value {
    json!({"name": name, "email": format!("{}@example.com", name.to_lowercase()), "phone": "+44 20 7946 0000"})
}

fn place(orders: &Proc, customer: &str, items: u32) -> anyhow::Result<(u16, String)> {
    let a = call(
        orders,
        "POST",
        "/orders",
        Some(json!({"customer_id": customer, "items": [{"sku": "tea", "quantity": items}]})),
    )?;
    let id = a.body["order_id"].as_str().unwrap_or_default().to_string();
    Ok((a.status, id))
}

fn notified(n: &Proc, order: &str) -> bool {
    call(n, "GET", &format!("/notifications/{order}"), None).is_ok_and(|a| a.status == 200)
}

/// Runs the story.
pub fn run(stage: &Stage) -> anyhow::Result<Story> {
    let mut s = Story::new("orders, customers and notifications");
    let park = [("notifications.park_interval_ms", "200")];
    let mut customers = stage.service("customers", "0", &[])?;
    let orders = stage.service("orders", "0", &[])?;
    let mut notifications = stage.service("notifications", "0", &park)?;
    let loyalty = stage.service("loyalty", "0", &[])?;
    s.say(
        Idea::Setup,
        "customers, orders, notifications and loyalty run as four processes; none knows another's address",
    );

    let a = call(&customers, "PUT", "/customers/ada", Some(customer("Ada")))?;
    s.say(
        Idea::CommandEventQuery,
        format!("PUT /customers/ada answered {}: customers stated customerUpdated (a fact, kept in a compacted topic)", a.status),
    );
    let mut placed = Vec::new();
    let (st, o1) = place(&orders, "ada", 2)?;
    placed.push(o1.clone());
    s.say(
        Idea::Event,
        format!("POST /orders answered {st} with {o1}: orders stated orderCreated and asked nobody to notify anyone"),
    );
    let ok = eventually(NOTIFY_WAIT, || notified(&notifications, &o1).then_some(())).is_some();
    s.say(
        Idea::NoOwner,
        format!("notifications joined {o1} against its OWN copy of ada's details and wrote the notification; it never called customers"),
    );
    s.check(format!("{o1} was notified"), ok);

    notifications.kill();
    s.say(Idea::CatchUp, "notifications is down (SIGKILL)");
    let mut accepted = 0;
    for _ in 0..3 {
        let (st, id) = place(&orders, "ada", 1)?;
        accepted += usize::from(st == 202);
        placed.push(id);
    }
    s.say(
        Idea::CatchUp,
        format!("3 orders placed while notifications is down: {accepted} accepted at once, because nothing waits on notifications"),
    );
    s.check(
        "orders are accepted while notifications is down",
        accepted == 3,
    );
    notifications.restart()?;
    let caught_up = eventually(NOTIFY_WAIT, || {
        placed
            .iter()
            .all(|o| notified(&notifications, o))
            .then_some(())
    })
    .is_some();
    s.say(
        Idea::CatchUp,
        "notifications is back: it read the orders it missed from where it left off and notified each",
    );
    s.check(
        "every order placed while notifications was down was notified after it came back",
        caught_up,
    );

    customers.kill();
    s.say(Idea::NoOwner, "customers is down (SIGKILL)");
    let (st, o5) = place(&orders, "ada", 3)?;
    placed.push(o5.clone());
    let ok = st == 202
        && eventually(NOTIFY_WAIT, || notified(&notifications, &o5).then_some(())).is_some();
    s.say(
        Idea::NoOwner,
        format!("an order for ada while customers is down: accepted ({st}) and notified, from notifications' own customer table"),
    );
    s.check(
        "with customers down, orders for known customers are still notified",
        ok,
    );

    let (st, ob) = place(&orders, "bob", 1)?;
    placed.push(ob.clone());
    std::thread::sleep(Duration::from_millis(600));
    let early = notified(&notifications, &ob);
    s.say(
        Idea::EventualConsistency,
        format!("an order for bob, whom nobody has heard of yet: accepted ({st}); notifications parks it (only bob's order waits)"),
    );
    customers.restart()?;
    let a = call(&customers, "PUT", "/customers/bob", Some(customer("Bob")))?;
    s.say(
        Idea::EventualConsistency,
        format!(
            "customers is back and bob signs up (PUT answered {})",
            a.status
        ),
    );
    let late = eventually(NOTIFY_WAIT, || notified(&notifications, &ob).then_some(())).is_some();
    s.say(
        Idea::EventualConsistency,
        "customerUpdated for bob reached notifications' table; the parked order went out",
    );
    s.check(
        "an order that arrived before its customer was notified once the customer arrived",
        !early && late,
    );

    // Exactly once, as seen in the notifications file.
    let listing = call(&notifications, "GET", "/notifications", None)?;
    let count = listing.body["count"].as_u64().unwrap_or(0) as usize;
    s.check(
        format!(
            "the notifications file holds each of the {} orders exactly once ({count} lines)",
            placed.len()
        ),
        count == placed.len() && placed.iter().all(|o| notified(&notifications, o)),
    );
    let points = call(&loyalty, "GET", "/customers/ada/points", None)?;
    let ada_orders = placed.len() - 1;
    s.say(
        Idea::Extensibility,
        format!(
            "loyalty, added without changing orders, counted ada's orders too: {}",
            points.body
        ),
    );
    s.check(
        "loyalty saw every one of ada's orders (fan-out)",
        points.body["orders"].as_u64().map(|n| n as usize) == Some(ada_orders),
    );
    // Customers feed notifications' table, not its group: the group reads orders.
    let lag_n = stage.lag_caught_up("notifications", &["orders"], Duration::from_secs(20));
    let lag_l = stage.lag_caught_up("loyalty", &["orders"], Duration::from_secs(20));
    s.check(
        format!("notifications and loyalty caught up: lag {lag_n} and {lag_l}"),
        lag_n == 0 && lag_l == 0,
    );
    s.note(format!("orders placed: {}", placed.len()));
    s.note(format!("notifications sent: {count} (each order once)"));
    s.note("services killed and restarted: notifications, customers");
    Ok(s)
}
