//! The shop's invariants (issue 10, section 1 and "Invariants"), one test each, on the
//! embedded log with virtual time; commands and bad input go over real HTTP on port 0.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Server, get, http, post, put};
use runnel_examples::Env;
use runnel_examples::shop::{
    self, Customer, CustomerUpdated, Item, Loyalty, NotificationLog, NotificationSent,
    OrderCreated, Points, PointsEarned,
};
use runnel_services::{Embedded, EmbeddedConfig, InstanceId, TestRuntime};
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// How long a test waits for a condition before it fails.
const WAIT_MAX: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// The shop under test

/// The harness, the notifications file, and the services started so far.
struct Shop {
    t: TestRuntime,
    file: PathBuf,
    log: NotificationLog,
}

impl Shop {
    async fn new() -> Shop {
        let t = TestRuntime::embedded().await.unwrap();
        let file = t.dir().join("notifications.log");
        let log = NotificationLog::open(&file).unwrap();
        Shop { t, file, log }
    }

    async fn customers(&mut self) -> (InstanceId, Server) {
        let id = self.t.start(shop::customers_service()).await.unwrap();
        let api = shop::customers_api(self.t.transport().clone(), self.t.handle(id));
        (id, Server::start(api).await)
    }

    async fn orders(&mut self) -> (InstanceId, Server) {
        let id = self.t.start(shop::orders_service()).await.unwrap();
        let api = shop::orders_api(self.t.transport().clone(), self.t.handle(id));
        (id, Server::start(api).await)
    }

    async fn notifications(&mut self) -> InstanceId {
        let service = shop::notifications_service(self.log.clone());
        self.t.start(service).await.unwrap()
    }

    async fn loyalty(&mut self) -> (InstanceId, Server) {
        let service = shop::loyalty_service(Loyalty {
            points_per_item: 10,
        });
        let id = self.t.start(service).await.unwrap();
        let api = shop::loyalty_api(self.t.transport().clone(), self.t.handle(id));
        (id, Server::start(api).await)
    }

    async fn idle(&self) {
        self.t.run_until_idle().await.unwrap();
    }

    /// The notifications file, line by line, as anyone reading it would see it.
    fn lines(&self) -> Vec<NotificationSent> {
        notified(&self.file)
    }
}

fn notified(file: &Path) -> Vec<NotificationSent> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
        .collect()
}

/// Complete lines in the file so far (a line being written has no newline yet).
fn line_count(file: &Path) -> usize {
    std::fs::read(file)
        .unwrap_or_default()
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

/// Asserts each of `orders` is in the file exactly once, and nothing else is.
fn assert_exactly_once(lines: &[NotificationSent], orders: &BTreeSet<String>) {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for n in lines {
        *count.entry(n.order_id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "notified more than once: {twice:?}");
    let seen: BTreeSet<String> = count.keys().map(|k| (*k).to_string()).collect();
    assert_eq!(&seen, orders, "every order notified, and only those");
}

/// A `customerUpdated` as the customers service would state it.
fn updated(id: &str) -> CustomerUpdated {
    CustomerUpdated {
        customer_id: id.into(),
        name: format!("Customer {id}"),
        email: format!("{id}@example.com"),
        phone: String::new(),
    }
}

/// The body of `PUT /customers/{id}` for `id` (the id itself goes in the path).
fn customer(id: &str) -> Value {
    json!({ "name": format!("Customer {id}"), "email": format!("{id}@example.com"), "phone": "+44 20 7946 0000" })
}

fn order_body(customer_id: &str, quantity: u32) -> Value {
    json!({ "customer_id": customer_id, "items": [{ "sku": "tea", "quantity": quantity }, { "sku": "cake", "quantity": 1 }] })
}

/// Places an order over HTTP; returns its id.
async fn place(orders: SocketAddr, customer_id: &str, quantity: u32) -> String {
    let (status, v) = post(orders, "/orders", &order_body(customer_id, quantity)).await;
    assert_eq!(status, 202, "{v}");
    v["order_id"].as_str().expect("the order id").to_string()
}

/// Registers a customer over HTTP: `PUT /customers/{id}`.
async fn register(customers: SocketAddr, id: &str) {
    let (status, v) = put(customers, &format!("/customers/{id}"), &customer(id)).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["customer_id"], id);
}

// ---------------------------------------------------------------------------------------
// Invariants

/// 1. Catch-up: with notifications stopped, every order is still accepted; once it is
/// back, every order is notified, each exactly once in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catch_up_orders_placed_while_notifications_is_down_are_all_notified_once() {
    let mut shop = Shop::new().await;
    let (_, customers) = shop.customers().await;
    let (_, orders) = shop.orders().await;
    let n = shop.notifications().await;
    register(customers.addr, "ada").await;
    shop.idle().await;

    shop.t.stop(n).await.unwrap();
    let mut placed = BTreeSet::new();
    for i in 0..25 {
        placed.insert(place(orders.addr, "ada", i % 3 + 1).await);
    }
    shop.idle().await;
    assert_eq!(shop.t.events::<OrderCreated>().await.unwrap().len(), 25);
    assert!(
        shop.lines().is_empty(),
        "nothing is notified while notifications is down"
    );
    let (status, v) = get(orders.addr, &format!("/orders/{}", placed.first().unwrap())).await;
    assert_eq!((status, &v["customer_id"]), (200, &json!("ada")), "{v}");

    shop.t.restart(n).await.unwrap();
    shop.idle().await;
    let lines = shop.lines();
    assert_exactly_once(&lines, &placed);
    assert!(lines.iter().all(|l| l.email == "ada@example.com"));
    let sent: BTreeSet<String> = shop
        .t
        .events::<NotificationSent>()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.order_id)
        .collect();
    assert_eq!(sent, placed, "notificationSent for every order");
    customers.stop().await;
    orders.stop().await;
    shop.t.shutdown().await.unwrap();
}

/// 3. Fan-out: notifications and loyalty each see every order; loyalty joined without
/// orders changing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fan_out_notifications_and_loyalty_each_see_every_order() {
    let mut shop = Shop::new().await;
    let (_, customers) = shop.customers().await;
    let (_, orders) = shop.orders().await;
    shop.notifications().await;
    let (l, loyalty) = shop.loyalty().await;
    for c in ["ada", "bob", "cy"] {
        register(customers.addr, c).await;
    }
    shop.idle().await;

    let mut placed = BTreeSet::new();
    let mut units: BTreeMap<&str, u64> = BTreeMap::new();
    for i in 0..30u32 {
        let c = ["ada", "bob", "cy"][i as usize % 3];
        placed.insert(place(orders.addr, c, i % 4 + 1).await);
        *units.entry(c).or_default() += u64::from(i % 4 + 1) + 1;
    }
    shop.idle().await;

    assert_exactly_once(&shop.lines(), &placed);
    let points = shop.t.table::<Points>(l).unwrap();
    let mut counted = BTreeSet::new();
    for (c, u) in &units {
        let p = points.get(c).unwrap().unwrap();
        assert_eq!(p.points, u * 10, "{c}: 10 points per item");
        counted.extend(p.orders);
        let (status, v) = get(loyalty.addr, &format!("/customers/{c}/points")).await;
        assert_eq!(status, 200);
        assert_eq!(v["points"], json!(u * 10), "{v}");
        assert_eq!(v["orders"], json!(10), "{v}");
    }
    assert_eq!(counted, placed, "loyalty counted every order");
    let earned = shop.t.events::<PointsEarned>().await.unwrap();
    assert_eq!(earned.len(), 30);
    let (status, v) = get(loyalty.addr, "/customers/nobody/points").await;
    assert_eq!((status, &v["points"]), (200, &json!(0)), "{v}");
    for s in [customers, orders, loyalty] {
        s.stop().await;
    }
    shop.t.shutdown().await.unwrap();
}

/// 4. Decoupling: with the customers service down, orders are still placed, and
/// customers already known are still notified.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decoupling_customers_down_orders_still_placed_and_notified() {
    let mut shop = Shop::new().await;
    let (c, customers) = shop.customers().await;
    let (_, orders) = shop.orders().await;
    shop.notifications().await;
    register(customers.addr, "ada").await;
    register(customers.addr, "bob").await;
    shop.idle().await;
    let (status, v) = get(customers.addr, "/customers/ada").await;
    assert_eq!(
        (status, &v["email"]),
        (200, &json!("ada@example.com")),
        "{v}"
    );

    let customers_addr = customers.addr;
    customers.stop().await;
    shop.t.stop(c).await.unwrap();
    assert!(
        TcpStream::connect(customers_addr).await.is_err(),
        "the customers service is down"
    );

    let mut placed = BTreeSet::new();
    for i in 0..10 {
        placed.insert(place(orders.addr, ["ada", "bob"][i % 2], 1).await);
    }
    shop.idle().await;
    let lines = shop.lines();
    assert_exactly_once(&lines, &placed);
    for l in &lines {
        assert_eq!(l.email, format!("{}@example.com", l.customer_id));
    }
    orders.stop().await;
    shop.t.shutdown().await.unwrap();
}

/// 5. Out of order: an order for a customer nobody has seen waits, parked, and is
/// notified once the customer's `customerUpdated` arrives (virtual time: the park
/// interval is advanced by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_order_an_order_before_its_customer_is_notified_once_the_customer_arrives() {
    let mut shop = Shop::new().await;
    let (_, customers) = shop.customers().await;
    let (_, orders) = shop.orders().await;
    let n = shop.notifications().await;
    register(customers.addr, "ada").await;
    shop.idle().await;

    let early = place(orders.addr, "newcomer", 2).await;
    let known = place(orders.addr, "ada", 1).await;
    shop.idle().await;
    let lines = shop.lines();
    assert_eq!(
        lines.iter().map(|l| &l.order_id).collect::<Vec<_>>(),
        [&known],
        "the known customer's order goes out; the newcomer's waits"
    );
    assert!(shop.t.metrics(n).parked >= 1);
    assert!(
        shop.t
            .dead_letters("notifications")
            .await
            .unwrap()
            .is_empty()
    );

    register(customers.addr, "newcomer").await;
    shop.idle().await;
    shop.t
        .advance(Duration::from_millis(shop::PARK_INTERVAL_MS_DEFAULT + 1));
    shop.idle().await;
    let lines = shop.lines();
    assert_exactly_once(&lines, &[early.clone(), known].into_iter().collect());
    let late = lines.iter().find(|l| l.order_id == early).unwrap();
    assert_eq!(late.email, "newcomer@example.com");
    assert!(
        shop.t
            .dead_letters("notifications")
            .await
            .unwrap()
            .is_empty()
    );
    customers.stop().await;
    orders.stop().await;
    shop.t.shutdown().await.unwrap();
}

/// 6. Bad input: a missing customer id, malformed JSON, an unknown content type,
/// invalid values and a bad id in the path each get a 4xx with a message, and nothing
/// is emitted; the old `POST /customers` is gone (404), and `POST /customers/{id}` is 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_with_a_4xx_and_emits_nothing() {
    let mut shop = Shop::new().await;
    let (_, customers) = shop.customers().await;
    let (_, orders) = shop.orders().await;
    // (content type, body, status, a word the message must contain)
    type Case = (Option<&'static str>, String, u16, &'static str);
    let json = Some("application/json");
    let order_refusals: Vec<Case> = vec![
        (
            json,
            r#"{"items":[{"sku":"tea","quantity":1}]}"#.into(),
            400,
            "customer_id",
        ),
        (
            json,
            r#"{"customer_id":"ada","items":[{"sku":"#.into(),
            400,
            "EOF",
        ),
        (
            Some("text/plain"),
            order_body("ada", 1).to_string(),
            415,
            "JSON",
        ),
        (None, order_body("ada", 1).to_string(), 415, "JSON"),
        (json, order_body("", 1).to_string(), 422, "customer_id"),
        (json, order_body("a/b", 1).to_string(), 422, "customer_id"),
        (json, order_body("ada", 0).to_string(), 422, "quantity"),
        (
            json,
            r#"{"customer_id":"ada","items":[]}"#.into(),
            422,
            "items",
        ),
    ];
    let customer_refusals: Vec<Case> = vec![
        (json, r#"{"name":"Ada","email":"#.into(), 400, "EOF"),
        (json, r#"{"name":"Ada"}"#.into(), 400, "email"),
        (
            json,
            r#"{"customer_id":"ada","name":"Ada","email":"ada@example.com"}"#.into(),
            400,
            "customer_id",
        ),
        (
            json,
            r#"{"name":"Ada","email":"nowhere"}"#.into(),
            422,
            "email",
        ),
        (
            Some("application/xml"),
            customer("ada").to_string(),
            415,
            "JSON",
        ),
    ];
    let long_id = "a".repeat(shop::ID_BYTES_MAX + 1);
    let targets = [
        (orders.addr, "POST", "/orders".to_string(), order_refusals),
        (
            customers.addr,
            "PUT",
            "/customers/ada".to_string(),
            customer_refusals,
        ),
        // A bad id in the path, with a good body: refused as the body's fields are.
        (
            customers.addr,
            "PUT",
            "/customers/a%2Fb".to_string(),
            vec![(json, customer("ada").to_string(), 422, "customer_id")],
        ),
        (
            customers.addr,
            "PUT",
            format!("/customers/{long_id}"),
            vec![(json, customer("ada").to_string(), 422, "customer_id")],
        ),
    ];
    for (addr, method, path, cases) in &targets {
        for (ct, body, want, mentions) in cases {
            let (status, v) = http(*addr, method, path, *ct, body).await;
            assert_eq!(status, *want, "{method} {path} {body}: {v}");
            let message = v["error"].as_str().unwrap_or_default();
            assert!(
                message.contains(mentions),
                "{method} {path} {body}: the message {message:?} names {mentions}"
            );
            assert!(v["code"].is_string(), "{v}");
            if *want == 422 {
                assert_eq!(v["code"], "invalid_command", "{v}");
            }
        }
    }
    // The command moved to `PUT /customers/{id}`: the old `POST /customers` has no
    // route at all (404), and `/customers/{id}` takes GET and PUT only (405).
    let mut old = customer("ada");
    old["customer_id"] = json!("ada");
    let (status, v) = post(customers.addr, "/customers", &old).await;
    assert_eq!((status, &v["code"]), (404, &json!("no_route")), "{v}");
    let (status, v) = post(customers.addr, "/customers/ada", &customer("ada")).await;
    assert_eq!(
        (status, &v["code"]),
        (405, &json!("method_not_allowed")),
        "{v}"
    );
    let (status, _) = get(orders.addr, "/orders/o-nonexistent").await;
    assert_eq!(status, 404);
    let (status, _) = get(customers.addr, "/customers/nobody").await;
    assert_eq!(status, 404);
    shop.idle().await;
    assert!(
        shop.t.records("orders").await.unwrap().is_empty(),
        "no orderCreated"
    );
    assert!(
        shop.t.records("customers").await.unwrap().is_empty(),
        "no customerUpdated"
    );
    customers.stop().await;
    orders.stop().await;
    shop.t.shutdown().await.unwrap();
}

/// A crash of notifications mid-stream (as SIGKILL), with a torn last line in the file
/// as a crash between write and fsync would leave: after the restart every order is in
/// the file exactly once.
///
/// Every tenth order is for a customer not known yet: parked, it holds its partition's
/// commit point, so whenever the crash falls, the restarted instance is handed again
/// orders that were already notified, and must append nothing for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_mid_stream_still_notifies_exactly_once_in_the_file() {
    let mut shop = Shop::new().await;
    let n = shop.notifications().await;
    shop.t.publish(&updated("ada")).await.unwrap();
    shop.idle().await;

    let total = 300;
    let mut placed = BTreeSet::new();
    let mut late = 0;
    for i in 0..total {
        let order_id = format!("o-crash-{i:04}");
        placed.insert(order_id.clone());
        let customer_id = if i % 10 == 3 { "late" } else { "ada" };
        late += usize::from(customer_id == "late");
        let e = OrderCreated {
            order_id,
            customer_id: customer_id.into(),
            items: vec![Item {
                sku: "tea".into(),
                quantity: 1,
            }],
        };
        shop.t.publish(&e).await.unwrap();
    }
    let deadline = Instant::now() + WAIT_MAX;
    while line_count(&shop.file) < 10 {
        assert!(Instant::now() < deadline, "notifications never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    shop.t.crash(n);
    // Under the file's lock, as the service writes: an append the crashed instance
    // still had in flight finishes first.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&shop.file)
        .unwrap();
    file.lock().unwrap();
    let at_crash = line_count(&shop.file);
    file.write_all(br#"{"order_id":"o-crash-torn","customer_id":"ada","na"#)
        .unwrap();
    file.unlock().unwrap();
    drop(file);
    assert!(
        at_crash <= total - late,
        "the late customer's orders waited"
    );

    shop.t.publish(&updated("late")).await.unwrap();
    shop.t.restart(n).await.unwrap();
    shop.idle().await;
    assert_exactly_once(&shop.lines(), &placed);
    let handled = shop.t.metrics(n).handled;
    assert!(
        handled > (total - at_crash) as u64,
        "orders notified before the crash were delivered again ({handled} handled after it, {at_crash} of {total} notified before)"
    );
    eprintln!("crashed with {at_crash} of {total} notified; {handled} handled after the restart");
    shop.t.shutdown().await.unwrap();
}

/// The file, not memory, is what a fresh process trusts: reopening it knows every order
/// it holds, cuts off a torn line, and appends nothing twice.
#[test]
fn notifications_file_reopened_knows_its_orders_and_cuts_a_torn_line() {
    let dir = std::env::temp_dir().join(format!("runnel-shop-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("n.log");
    let n = |id: &str| NotificationSent {
        order_id: id.into(),
        customer_id: "ada".into(),
        name: "Ada".into(),
        email: "ada@example.com".into(),
        message: format!("order {id}"),
    };
    let log = NotificationLog::open(&path).unwrap();
    assert!(matches!(
        log.append(&n("o-1")).unwrap(),
        shop::Appended::Written(_)
    ));
    assert!(matches!(
        log.append(&n("o-2")).unwrap(),
        shop::Appended::Written(_)
    ));
    drop(log);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"order_id\":\"o-3\",\"cust")
        .unwrap();

    let log = NotificationLog::open(&path).unwrap();
    assert_eq!(log.summary(10).unwrap().0, 2);
    let again = log.append(&n("o-1")).unwrap();
    assert_eq!(again, shop::Appended::AlreadySent(n("o-1")));
    assert!(matches!(
        log.append(&n("o-3")).unwrap(),
        shop::Appended::Written(_)
    ));
    let ids: Vec<String> = notified(&path).into_iter().map(|l| l.order_id).collect();
    assert_eq!(ids, ["o-1", "o-2", "o-3"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The customers service's own view answers from its own topic; notifications keeps a
/// separate copy (it never asks customers).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customers_and_notifications_each_keep_their_own_customer_table() {
    let mut shop = Shop::new().await;
    let (c, customers) = shop.customers().await;
    let n = shop.notifications().await;
    register(customers.addr, "ada").await;
    shop.t
        .publish(&CustomerUpdated {
            customer_id: "ada".into(),
            name: "Ada L.".into(),
            email: "ada@lovelace.example".into(),
            phone: String::new(),
        })
        .await
        .unwrap();
    shop.idle().await;
    let (status, v) = get(customers.addr, "/customers/ada").await;
    assert_eq!(
        (status, &v["email"]),
        (200, &json!("ada@lovelace.example")),
        "{v}"
    );
    let own = shop
        .t
        .table::<Customer>(n)
        .unwrap()
        .get("ada")
        .unwrap()
        .unwrap();
    assert_eq!(own.name, "Ada L.");
    assert_eq!(
        shop.t.table::<Customer>(c).unwrap().get("ada").unwrap(),
        Some(own)
    );
    customers.stop().await;
    shop.t.shutdown().await.unwrap();
}

/// The services as `runnel example` and `runnel demo` start them (`start`, settings,
/// health), driven only over HTTP: customer, order, notification, points.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_serves_every_shop_service_over_http() {
    let dir = std::env::temp_dir().join(format!("runnel-shop-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let log = Embedded::open(EmbeddedConfig::new(dir.join("log"))).unwrap();
    let env = Env {
        transport: log.clone(),
        state_dir: dir.join("state"),
        http: "127.0.0.1:0".parse().unwrap(),
        instance: "0".into(),
        settings: [
            ("notifications.park_interval_ms", "20"),
            ("loyalty.points_per_item", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    let mut running = BTreeMap::new();
    for name in ["customers", "orders", "notifications", "loyalty"] {
        let r = runnel_examples::start(name, &env).await.unwrap();
        let (status, v) = get(r.http, "/health/ready").await;
        assert_eq!(status, 200, "{name}: {v}");
        running.insert(name, r);
    }
    let addr = |name: &str| running[name].http;

    let early = place(addr("orders"), "grace", 3).await;
    register(addr("customers"), "grace").await;
    let deadline = Instant::now() + WAIT_MAX;
    let notified = loop {
        let (status, v) = get(addr("notifications"), &format!("/notifications/{early}")).await;
        if status == 200 {
            break v;
        }
        assert_eq!(status, 404, "{v}");
        assert!(
            Instant::now() < deadline,
            "order {early} was never notified"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(notified["email"], "grace@example.com");
    let (status, v) = get(addr("notifications"), "/notifications").await;
    assert_eq!((status, &v["count"]), (200, &json!(1)), "{v}");
    assert!(
        v["file"].as_str().unwrap().ends_with("notifications.log"),
        "{v}"
    );
    let (status, v) = get(addr("orders"), &format!("/orders/{early}")).await;
    assert_eq!((status, &v["customer_id"]), (200, &json!("grace")), "{v}");
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let (_, v) = get(addr("loyalty"), "/customers/grace/points").await;
        if v["points"] == json!(20) {
            break;
        }
        assert!(Instant::now() < deadline, "points never reached 20: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(runnel_examples::start("nobody", &env).await.is_err());
    for (_, r) in running {
        r.stop().await.unwrap();
    }
    log.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
