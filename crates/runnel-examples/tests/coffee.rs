//! The coffee shop's invariants (issue 10, section 2), one test each: the real services
//! on the embedded log, commands and queries over real HTTP on port 0.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{http, serve};
use runnel_examples::coffee::{
    CashierConfig, DrinkReady, DrinkStatus, ORDER_ID_BYTES_MAX, OrderPlaced, OrderView,
    PaymentProcessed, PrepTimes, barista_service, cashier_api, cashier_service, counter_api,
    counter_service,
};
use runnel_examples::{Env, start};
use runnel_services::{InstanceId, TestRuntime};
use serde_json::{Value, json};

/// How long any wait in these tests may take before it fails the test.
const WAIT_MAX: Duration = Duration::from_secs(45);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(10);

/// A JSON call: POST bodies are sent as `application/json`.
async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let ct = (method == "POST").then_some("application/json");
    http(addr, method, path, ct, body).await
}

/// Places an order at the cashier; returns its id.
async fn place(cashier: SocketAddr, name: &str, drink: &str) -> String {
    let (status, v) = call(
        cashier,
        "POST",
        "/orders",
        &json!({"name": name, "drink": drink}).to_string(),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    v["order"].as_str().expect("the order id").to_string()
}

/// Pays for `order` (`POST /orders/{order}/payment`); returns the status and the
/// answer.
async fn pay(cashier: SocketAddr, order: &str, method: &str, card: Option<&str>) -> (u16, Value) {
    let mut body = json!({"method": method});
    if let Some(card) = card {
        body["card"] = json!(card);
    }
    let path = format!("/orders/{order}/payment");
    call(cashier, "POST", &path, &body.to_string()).await
}

/// Waits, up to [`WAIT_MAX`], until `check` holds.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT_MAX;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// The counter's row for `order`, over HTTP.
async fn counter_row(counter: SocketAddr, order: &str) -> Option<Value> {
    let (status, v) = call(counter, "GET", &format!("/orders/{order}"), "").await;
    (status == 200).then_some(v)
}

/// Who made each order's drink, once per `drinkReady` (duplicates included).
async fn makers(t: &TestRuntime) -> BTreeMap<String, Vec<String>> {
    let mut made: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in t.events::<DrinkReady>().await.unwrap() {
        made.entry(d.order).or_default().push(d.barista);
    }
    made
}

const DRINKS: [&str; 5] = [
    "black_coffee",
    "espresso",
    "latte",
    "cappuccino",
    "frappuccino",
];

/// The cashier (with `config`), the counter, and baristas named `baristas`, all
/// taking `prep` per drink; the cashier's and the counter's APIs served.
struct Shop {
    t: TestRuntime,
    cashier: SocketAddr,
    counter_id: InstanceId,
    counter: SocketAddr,
    baristas: Vec<InstanceId>,
}

async fn shop(config: CashierConfig, baristas: &[&str], prep: &PrepTimes) -> Shop {
    let mut t = TestRuntime::embedded().await.unwrap();
    let cashier_id = t.start(cashier_service()).await.unwrap();
    let counter_id = t.start(counter_service()).await.unwrap();
    let mut ids = Vec::new();
    for b in baristas {
        let service = barista_service(b, prep.clone(), t.transport().clone());
        ids.push(t.start(service).await.unwrap());
    }
    let cashier = serve(cashier_api(
        t.transport().clone(),
        t.handle(cashier_id),
        config,
    ))
    .await;
    let counter = serve(counter_api(t.transport().clone(), t.handle(counter_id))).await;
    Shop {
        t,
        cashier,
        counter_id,
        counter,
        baristas: ids,
    }
}

/// Places `n` orders of every drink in turn; returns their ids.
async fn place_many(cashier: SocketAddr, prefix: &str, n: usize) -> Vec<String> {
    let mut orders = Vec::with_capacity(n);
    for i in 0..n {
        orders.push(place(cashier, &format!("{prefix}{i}"), DRINKS[i % DRINKS.len()]).await);
    }
    orders
}

/// Invariant 2: with two baristas every drink is made exactly once and both made some;
/// kill one mid-stream and the other finishes the queue, losing no drink. Duplicates
/// are allowed only for the killed one's drinks that it had not committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn competing_consumers() {
    let prep = PrepTimes::uniform(Duration::from_millis(40));
    let mut s = shop(CashierConfig::default(), &["b1", "b2"], &prep).await;
    let (b1, b2) = (s.baristas[0], s.baristas[1]);

    // Nothing crashes: each drink exactly once, and both baristas made some.
    let first = place_many(s.cashier, "calm-", 24).await;
    s.t.run_until_idle().await.unwrap();
    let made = makers(&s.t).await;
    for o in &first {
        assert_eq!(
            made.get(o).map(Vec::len),
            Some(1),
            "{o} made once: {made:?}"
        );
    }
    let by: BTreeSet<&str> = made.values().flatten().map(String::as_str).collect();
    assert_eq!(by, BTreeSet::from(["b1", "b2"]), "both baristas made some");

    // b1 is killed mid-stream while orders keep arriving.
    let handled_before = s.t.metrics(b1).handled;
    let cashier = s.cashier;
    let placing = tokio::spawn(async move { place_many(cashier, "rush-", 40).await });
    let t = &s.t;
    wait_until("b1 to make two drinks of the rush", || async {
        t.metrics(b1).handled >= handled_before + 2
    })
    .await;
    let made_before_crash = makers(&s.t).await.len();
    s.t.crash(b1);
    let second = placing.await.unwrap();
    assert!(
        made_before_crash < first.len() + second.len(),
        "the crash came mid-stream"
    );

    // b2 takes over b1's cups once b1's session times out, and finishes the queue.
    s.t.run_until_idle().await.unwrap();
    let made = makers(&s.t).await;
    for o in &second {
        let m = made.get(o).unwrap_or_else(|| panic!("{o} was lost"));
        assert!(
            m.len() == 1 || (m.len() == 2 && m.contains(&"b1".to_string())),
            "{o} made {m:?}: only b1's uncommitted drinks may be made twice"
        );
    }
    // b1's cups went to b2: orders in b1's partitions, made by b2 alone.
    let partition: BTreeMap<String, i32> =
        s.t.records("coffee.orders")
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    String::from_utf8_lossy(r.key.as_deref().unwrap()).into_owned(),
                    r.tp.partition,
                )
            })
            .collect();
    let b1_partitions: BTreeSet<i32> = first
        .iter()
        .filter(|o| made[*o] == ["b1"])
        .map(|o| partition[o])
        .collect();
    let taken_over = second
        .iter()
        .filter(|o| b1_partitions.contains(&partition[*o]) && made[*o] == ["b2"])
        .count();
    assert!(taken_over > 0, "b2 finished b1's share of the queue");
    assert!(s.t.metrics(b2).handled > 0);
    // The counter de-duplicates by order id: every order is ready exactly once.
    let table = s.t.table::<OrderView>(s.counter_id).unwrap();
    for o in first.iter().chain(&second) {
        let row = table.get(o).unwrap().unwrap();
        assert_eq!(row.drink_status, DrinkStatus::Ready, "{row:?}");
        assert!(row.barista.is_some());
    }
    let (status, summary) = call(s.counter, "GET", "/summary", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        summary["ready"],
        json!(first.len() + second.len()),
        "{summary}"
    );
    s.t.shutdown().await.unwrap();
}

/// Invariant 3: the counter and the baristas each see every order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fan_out() {
    let prep = PrepTimes::uniform(Duration::from_millis(2));
    let s = shop(CashierConfig::default(), &["b1", "b2"], &prep).await;
    let orders = place_many(s.cashier, "fan-", 30).await;
    s.t.run_until_idle().await.unwrap();

    let placed: BTreeMap<String, OrderPlaced> =
        s.t.events::<OrderPlaced>()
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.order.clone(), e))
            .collect();
    assert_eq!(placed.len(), orders.len());
    // The baristas, as one group, made every order.
    let made = makers(&s.t).await;
    assert_eq!(
        made.keys().collect::<BTreeSet<_>>(),
        placed.keys().collect::<BTreeSet<_>>(),
        "the baristas saw every order"
    );
    // The counter, a group of its own, has every order, with what was ordered.
    let (status, list) = call(s.counter, "GET", "/orders?limit=1000", "").await;
    assert_eq!(status, 200);
    let rows = list["orders"].as_array().unwrap();
    assert_eq!(rows.len(), orders.len(), "the counter saw every order");
    for row in rows {
        let o = row["order"].as_str().unwrap();
        let e = &placed[o];
        assert_eq!(row["placed"], json!(true));
        assert_eq!(row["name"], json!(e.name));
        assert_eq!(row["drink"], json!(e.drink));
        assert_eq!(row["drink_status"], json!("ready"));
    }
    // The list pages in id order.
    let (_, page) = call(s.counter, "GET", "/orders?limit=10", "").await;
    assert_eq!(page["orders"].as_array().unwrap().len(), 10);
    let next = page["next"].as_str().unwrap();
    let (_, rest) = call(
        s.counter,
        "GET",
        &format!("/orders?from={next}&limit=1000"),
        "",
    )
    .await;
    assert_eq!(rest["orders"].as_array().unwrap().len(), orders.len() - 10);
    s.t.shutdown().await.unwrap();
}

/// Invariant 6: an invalid command gets a 4xx with a clear message, and nothing is
/// emitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input() {
    let config = CashierConfig {
        lookup_wait: Duration::from_millis(50),
        ..CashierConfig::default()
    };
    let s = shop(config, &[], &PrepTimes::default()).await;
    let long_order = format!("/orders/{}/payment", "o".repeat(ORDER_ID_BYTES_MAX + 1));
    // (what, path, body, status, what the message mentions)
    let refusals: [(&str, &str, &str, u16, &str); 11] = [
        (
            "unknown drink",
            "/orders",
            r#"{"name":"Ada","drink":"mocha"}"#,
            422,
            "not on the menu",
        ),
        ("malformed JSON", "/orders", r#"{"name":"Ada","#, 400, "EOF"),
        (
            "missing name",
            "/orders",
            r#"{"drink":"latte"}"#,
            400,
            "name",
        ),
        (
            "empty name",
            "/orders",
            r#"{"name":" ","drink":"latte"}"#,
            422,
            "name",
        ),
        (
            "unknown order",
            "/orders/o-nope/payment",
            r#"{"method":"cash"}"#,
            404,
            "no order \"o-nope\"",
        ),
        (
            "order id with a space",
            "/orders/o%201/payment",
            r#"{"method":"cash"}"#,
            422,
            "order \"o 1\"",
        ),
        (
            "order id too long",
            long_order.as_str(),
            r#"{"method":"cash"}"#,
            422,
            "order \"ooo",
        ),
        (
            "unknown method",
            "/orders/o-1/payment",
            r#"{"method":"cheque"}"#,
            422,
            "method",
        ),
        (
            "cash with a card",
            "/orders/o-1/payment",
            r#"{"method":"cash","card":"4242"}"#,
            422,
            "card",
        ),
        (
            "missing method",
            "/orders/o-1/payment",
            r#"{"card":"4242"}"#,
            400,
            "method",
        ),
        ("malformed payment", "/orders/o-1/payment", "{", 400, "EOF"),
    ];
    for (what, path, body, want, mentions) in refusals {
        let (status, v) = call(s.cashier, "POST", path, body).await;
        assert_eq!(status, want, "{what}: {v}");
        let message = v["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(mentions),
            "{what}: a clear message, got {v}"
        );
    }
    let (status, _) = http(
        s.cashier,
        "POST",
        "/orders",
        Some("text/plain"),
        "a latte please",
    )
    .await;
    assert_eq!(status, 415, "a command is JSON");
    let (status, _) = call(s.cashier, "PUT", "/orders/o-1/payment", "{}").await;
    assert_eq!(status, 405, "a payment is a POST");
    let (status, _) = call(s.cashier, "POST", "/payments", r#"{"method":"cash"}"#).await;
    assert_eq!(status, 404, "the old route is gone");
    assert!(
        s.t.records("coffee.orders").await.unwrap().is_empty(),
        "no order emitted"
    );
    assert!(
        s.t.records("coffee.payments").await.unwrap().is_empty(),
        "no payment emitted"
    );
    // The same cashier takes a valid order: the refusals were about the input.
    place(s.cashier, "Ada", "latte").await;
    assert_eq!(s.t.records("coffee.orders").await.unwrap().len(), 1);
    s.t.shutdown().await.unwrap();
}

/// Hohpe's write-off: a declined payment for a drink already made (or made later: the
/// barista never waits for the payment) leaves the drink written off at the counter;
/// paid drinks are not; a second payment of any order is refused and emits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn declined_payment_for_a_drink_already_made_is_written_off() {
    let prep = PrepTimes::uniform(Duration::from_millis(5));
    let s = shop(CashierConfig::default(), &["b1"], &prep).await;
    let counter = s.counter;
    let row_where = |order: String, field: &'static str, want: Value| async move {
        counter_row(counter, &order)
            .await
            .is_some_and(|r| r[field] == want)
    };

    // Made first, then the card is declined: written off.
    let made = place(s.cashier, "Ada", "black_coffee").await;
    wait_until("Ada's drink to be ready", || {
        row_where(made.clone(), "drink_status", json!("ready"))
    })
    .await;
    let (status, v) = pay(s.cashier, &made, "card", Some("0000")).await;
    assert_eq!(
        status, 200,
        "a declined payment is still a processed payment: {v}"
    );
    assert_eq!(v["outcome"], json!("declined"));
    wait_until("Ada's drink to be written off", || {
        row_where(made.clone(), "written_off", json!(true))
    })
    .await;

    // Declined before the drink is made: it is made anyway, and written off.
    let early = place(s.cashier, "Bob", "frappuccino").await;
    let (status, v) = pay(s.cashier, &early, "card", Some("0000")).await;
    assert_eq!((status, &v["outcome"]), (200, &json!("declined")), "{v}");
    wait_until("Bob's drink to be written off", || {
        row_where(early.clone(), "written_off", json!(true))
    })
    .await;

    // Paid by card: ready, paid, not written off.
    let paid = place(s.cashier, "Cy", "latte").await;
    let (status, v) = pay(s.cashier, &paid, "card", Some("4242")).await;
    assert_eq!((status, &v["outcome"]), (200, &json!("paid")), "{v}");
    wait_until("Cy's drink to be ready", || {
        row_where(paid.clone(), "drink_status", json!("ready"))
    })
    .await;
    let row = counter_row(counter, &paid).await.unwrap();
    assert_eq!(
        (&row["payment"], &row["written_off"]),
        (&json!("paid"), &json!(false)),
        "{row}"
    );

    // Every order is paid for once: a second payment is 409 and emits nothing.
    s.t.run_until_idle().await.unwrap();
    for order in [&made, &early, &paid] {
        let (status, v) = pay(s.cashier, order, "cash", None).await;
        assert_eq!(status, 409, "{v}");
    }
    let payments = s.t.events::<PaymentProcessed>().await.unwrap();
    assert_eq!(payments.len(), 3, "{payments:?}");
    let (_, summary) = call(counter, "GET", "/summary", "").await;
    assert_eq!(
        (&summary["written_off"], &summary["paid"]),
        (&json!(2), &json!(1)),
        "{summary}"
    );
    s.t.shutdown().await.unwrap();
}

/// Read-your-writes: a payment sent the moment the order's 202 arrives finds the order,
/// at the cashier copy that placed it (its own writes, no waiting) and at another copy
/// (its table catches up within the lookup wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_right_after_its_order_finds_it() {
    let mut t = TestRuntime::embedded().await.unwrap();
    let first = t.start(cashier_service()).await.unwrap();
    let second = t.add_instance(first).await.unwrap();
    let no_wait = CashierConfig {
        lookup_wait: Duration::ZERO,
        ..CashierConfig::default()
    };
    let here = serve(cashier_api(t.transport().clone(), t.handle(first), no_wait)).await;
    let there = serve(cashier_api(
        t.transport().clone(),
        t.handle(second),
        CashierConfig::default(),
    ))
    .await;
    for i in 0..20 {
        let order = place(here, &format!("c{i}"), "espresso").await;
        let at = if i % 2 == 0 { here } else { there };
        let (status, v) = pay(at, &order, "cash", None).await;
        assert_eq!(
            (status, &v["outcome"]),
            (200, &json!("paid")),
            "order {i}: {v}"
        );
    }
    t.run_until_idle().await.unwrap();
    assert_eq!(t.events::<PaymentProcessed>().await.unwrap().len(), 20);
    t.shutdown().await.unwrap();
}

/// The wiring `runnel example` and `runnel demo` use: each service started by name from
/// an `Env` (settings included), with its HTTP API, health and metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_service_starts_by_name_with_its_api() {
    let t = TestRuntime::embedded().await.unwrap();
    let env = |instance: &str, settings: &[(&str, &str)]| Env {
        transport: t.transport().clone(),
        state_dir: t.dir().join("services"),
        http: "127.0.0.1:0".parse().unwrap(),
        instance: instance.to_string(),
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let fast = [("prep.black_coffee_ms", "5")];
    let cashier = start("cashier", &env("0", &[("declined_cards", "1111")]))
        .await
        .unwrap();
    let counter = start("counter", &env("0", &[])).await.unwrap();
    let b1 = start("barista", &env("b1", &fast)).await.unwrap();
    let b2 = start("barista", &env("b2", &fast)).await.unwrap();
    for r in [&cashier, &counter, &b1, &b2] {
        let (status, v) = call(r.http, "GET", "/health/ready", "").await;
        assert_eq!(status, 200, "{v}");
    }
    let bad = start("barista", &env("b3", &[("prep.latte_ms", "soon")])).await;
    assert!(bad.is_err(), "a setting that does not parse is refused");

    let order = place(cashier.http, "Ada", "black_coffee").await;
    let (status, v) = pay(cashier.http, &order, "card", Some("1111")).await;
    assert_eq!((status, &v["outcome"]), (200, &json!("declined")), "{v}");
    let counter_http = counter.http;
    wait_until("the drink to be ready and written off", || {
        let order = order.clone();
        async move {
            counter_row(counter_http, &order)
                .await
                .is_some_and(|r| r["written_off"] == json!(true))
        }
    })
    .await;
    let (_, summary) = call(counter.http, "GET", "/summary", "").await;
    let by: u64 = summary["drinks_by_barista"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(by, 1, "{summary}");
    for r in [cashier, counter, b1, b2] {
        r.stop().await.unwrap();
    }
    t.shutdown().await.unwrap();
}
