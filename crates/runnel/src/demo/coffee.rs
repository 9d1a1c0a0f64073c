//! The coffee shop's story (the first essay): you order and the cup goes in the queue;
//! while the barista makes it, you pay; then your drink is ready. Two baristas share
//! the queue, one is killed mid-queue, no drink is lost; a declined card for a drink
//! already made is written off.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Idea, Stage, Story, call, eventually};
use crate::demo::procs::Proc;

/// How long the queue may take to drain (a killed barista's cups move after its
/// session times out).
const QUEUE_WAIT: Duration = Duration::from_secs(60);

fn order(cashier: &Proc, name: &str, drink: &str) -> anyhow::Result<String> {
    let a = call(
        cashier,
        "POST",
        "/orders",
        Some(json!({"name": name, "drink": drink})),
    )?;
    anyhow::ensure!(
        a.status == 202,
        "POST /orders answered {}: {}",
        a.status,
        a.body
    );
    Ok(a.body["order"].as_str().unwrap_or_default().to_string())
}

fn status(counter: &Proc, order: &str) -> Value {
    call(counter, "GET", &format!("/orders/{order}"), None)
        .ok()
        .filter(|a| a.status == 200)
        .map_or(Value::Null, |a| a.body)
}

fn summary(counter: &Proc) -> Value {
    call(counter, "GET", "/summary", None).map_or(Value::Null, |a| a.body)
}

/// Runs the story.
pub fn run(stage: &Stage) -> anyhow::Result<Story> {
    let mut s = Story::new("the coffee shop");
    let prep = [
        ("prep.black_coffee_ms", "150"),
        ("prep.frappuccino_ms", "900"),
    ];
    let cashier = stage.service("cashier", "0", &[])?;
    let counter = stage.service("counter", "0", &[])?;
    let mut b1 = stage.service("barista", "b1", &prep)?;
    let b2 = stage.service("barista", "b2", &prep)?;
    s.say(
        Idea::Setup,
        "a cashier, a counter and two baristas (b1, b2) run as four processes",
    );

    let o = order(&cashier, "Yasser", "frappuccino")?;
    s.say(
        Idea::CommandEventQuery,
        format!("Yasser orders a frappuccino: the cashier writes the name on the cup and puts it in the queue (orderPlaced {o})"),
    );
    let pay = call(
        &cashier,
        "POST",
        &format!("/orders/{o}/payment"),
        Some(json!({"method": "card", "card": "4111"})),
    )?;
    s.say(
        Idea::CommandEventQuery,
        format!(
            "while the barista works, Yasser pays by card: a command, answered at once ({}), stating paymentProcessed",
            pay.body["outcome"].as_str().unwrap_or("?")
        ),
    );
    let mut seen_preparing = false;
    let ready = eventually(QUEUE_WAIT, || {
        let st = status(&counter, &o);
        seen_preparing |= st["drink_status"] == "preparing";
        (st["drink_status"] == "ready").then_some(st)
    })
    .unwrap_or(Value::Null);
    s.say(
        Idea::CommandEventQuery,
        format!(
            "the counter answers \"is my drink ready?\" from its own view, asking no barista: {} by {}, {}",
            ready["drink_status"], ready["barista"], ready["payment"]
        ),
    );
    s.check(
        "the first drink was made and paid for",
        ready["payment"] == "paid",
    );

    let mut placed = vec![o];
    for i in 0..16 {
        let drink = if i % 4 == 0 {
            "frappuccino"
        } else {
            "black_coffee"
        };
        placed.push(order(&cashier, &format!("guest {i}"), drink)?);
    }
    s.say(
        Idea::CompetingConsumers,
        "16 more cups go in the queue; b1 and b2 share it as competing consumers (one group, its partitions split)",
    );
    // Mid-queue: once b1 has made a drink or two, while cups still wait.
    let b1_working = eventually(QUEUE_WAIT, || {
        (summary(&counter)["drinks_by_barista"]["b1"]
            .as_u64()
            .unwrap_or(0)
            >= 1)
            .then_some(())
    })
    .is_some();
    b1.kill();
    s.say(
        Idea::CatchUp,
        "barista b1 is SIGKILLed mid-queue; its cups wait until the group notices, then b2 takes them over",
    );
    let all_ready = eventually(QUEUE_WAIT, || {
        placed
            .iter()
            .all(|o| status(&counter, o)["drink_status"] == "ready")
            .then_some(())
    })
    .is_some();
    let sum = summary(&counter);
    s.say(
        Idea::CompetingConsumers,
        format!(
            "the queue is empty again; drinks by barista: {}",
            sum["drinks_by_barista"]
        ),
    );
    s.check(
        "with a barista killed mid-queue, every drink was still made",
        all_ready && b1_working,
    );
    let by = &sum["drinks_by_barista"];
    s.check(
        "both baristas made some drinks",
        by["b1"].as_u64().unwrap_or(0) > 0 && by["b2"].as_u64().unwrap_or(0) > 0,
    );
    s.check(
        "the counter saw every order (fan-out: counter and baristas each get every orderPlaced)",
        sum["orders"].as_u64() == Some(placed.len() as u64),
    );

    let late = order(&cashier, "Martin", "black_coffee")?;
    eventually(QUEUE_WAIT, || {
        (status(&counter, &late)["drink_status"] == "ready").then_some(())
    });
    let declined = call(
        &cashier,
        "POST",
        &format!("/orders/{late}/payment"),
        Some(json!({"method": "card", "card": "0000"})),
    )?;
    let wrote_off = eventually(QUEUE_WAIT, || {
        (status(&counter, &late)["written_off"] == true).then_some(())
    })
    .is_some();
    s.say(
        Idea::NoOwner,
        format!(
            "Martin's black coffee was made before he paid; his card is {}: no two-phase commit, the shop writes the drink off",
            declined.body["outcome"].as_str().unwrap_or("?")
        ),
    );
    s.check(
        "a declined payment for a drink already made is written off",
        wrote_off,
    );
    let lag = stage.lag_caught_up("barista", &["coffee.orders"], Duration::from_secs(20));
    s.check(
        format!("the baristas caught up with the queue: lag {lag}"),
        lag == 0,
    );
    drop(b2);
    s.note(format!("orders placed: {}", placed.len() + 1));
    s.note(format!(
        "drinks by barista: {}",
        summary(&counter)["drinks_by_barista"]
    ));
    s.note(format!("written off: {}", summary(&counter)["written_off"]));
    Ok(s)
}
