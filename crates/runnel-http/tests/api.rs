//! Every route of the HTTP API, with its bad-input cases, over a broker on a temporary
//! directory (the router is called in-process; no sockets).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode};
use runnel_broker::{Broker, BrokerConfig};
use runnel_core::offsets::Committed;
use runnel_log::{Log, LogConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Fixture {
    broker: Arc<Broker>,
    dir: std::path::PathBuf,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(tag: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("runnel-http-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let log = Arc::new(Log::open(LogConfig::new(&dir)).unwrap());
    let config = BrokerConfig {
        data_dir: dir.clone(),
        default_partitions: 2,
        ..BrokerConfig::default()
    };
    let (stop, rx) = tokio::sync::watch::channel(false);
    let broker = Arc::new(Broker::new(log, config, 9092, rx).unwrap());
    Fixture {
        broker,
        dir,
        _stop: stop,
    }
}

/// Sends one request; returns the status and the body (JSON, or text as a JSON string).
async fn call(f: &Fixture, method: Method, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = runnel_http::router(f.broker.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = resp.status();
    let bytes = to_bytes(resp.into_body(), 16 << 20).await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

async fn get(f: &Fixture, uri: &str) -> (StatusCode, Value) {
    call(f, Method::GET, uri, None).await
}

async fn post(f: &Fixture, uri: &str, body: &str) -> (StatusCode, Value) {
    call(f, Method::POST, uri, Some(body)).await
}

fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{:?}", got.1);
    assert_eq!(got.1["code"], code, "{:?}", got.1);
    assert!(got.1["error"].as_str().is_some_and(|e| !e.is_empty()));
}

#[tokio::test]
async fn health_answers() {
    let f = fixture("health");
    assert_eq!(
        get(&f, "/health/live").await,
        (StatusCode::OK, json!({"status": "live"}))
    );
    assert_eq!(get(&f, "/health/ready").await.0, StatusCode::OK);
    f._stop.send(true).unwrap();
    assert_error(
        &get(&f, "/health/ready").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
    );
    assert_error(
        &get(&f, "/nowhere").await,
        StatusCode::NOT_FOUND,
        "no_route",
    );
}

#[tokio::test]
async fn topics_are_created_listed_described_and_deleted() {
    let f = fixture("topics");
    let (status, t) = post(
        &f,
        "/api/v1/topics",
        r#"{"name":"orders","partitions":3,"config":{"retention.ms":"60000"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    assert_eq!(t["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(
        t["config"]["retention.ms"],
        json!({"value": "60000", "overridden": true})
    );
    let (_, d) = post(&f, "/api/v1/topics", r#"{"name":"defaults"}"#).await;
    assert_eq!(
        d["partitions"].as_array().unwrap().len(),
        2,
        "the broker's default"
    );

    assert_error(
        &post(&f, "/api/v1/topics", r#"{"name":"orders"}"#).await,
        StatusCode::CONFLICT,
        "topic_exists",
    );
    assert_error(
        &post(&f, "/api/v1/topics", r#"{"name":"bad name!"}"#).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &post(&f, "/api/v1/topics", r#"{"name":"x","partitions":0}"#).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &post(
            &f,
            "/api/v1/topics",
            r#"{"name":"x","config":{"retention.ms":"soon"}}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &post(&f, "/api/v1/topics", r#"{"name":"x","colour":"red"}"#).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "bad_json",
    );
    assert_error(
        &post(&f, "/api/v1/topics", "{not json").await,
        StatusCode::BAD_REQUEST,
        "bad_json",
    );
    assert_error(
        &post(&f, "/api/v1/topics", r#"{"name":"__consumer_offsets"}"#).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(2 << 20));
    assert_error(
        &post(&f, "/api/v1/topics", &huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );

    let (status, list) = get(&f, "/api/v1/topics").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["defaults", "orders"]);

    assert_eq!(get(&f, "/api/v1/topics/orders").await.0, StatusCode::OK);
    assert_error(
        &get(&f, "/api/v1/topics/nope").await,
        StatusCode::NOT_FOUND,
        "unknown_topic",
    );
    assert_eq!(
        call(&f, Method::DELETE, "/api/v1/topics/orders", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &call(&f, Method::DELETE, "/api/v1/topics/orders", None).await,
        StatusCode::NOT_FOUND,
        "unknown_topic",
    );
    assert_error(
        &call(
            &f,
            Method::DELETE,
            "/api/v1/topics/__consumer_offsets",
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
}

#[tokio::test]
async fn records_are_produced_and_read_back() {
    let f = fixture("records");
    post(&f, "/api/v1/topics", r#"{"name":"events","partitions":2}"#).await;
    let (status, r) = post(
        &f,
        "/api/v1/topics/events/records",
        r#"{"records":[{"key":"a","value":"1"},{"value":"2","partition":1},{"key":"a","value":null},{"value":"3","partition":1}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let offsets = r["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 4);
    // The same key lands in the same partition, in order.
    assert_eq!(offsets[0]["partition"], offsets[2]["partition"]);
    assert_eq!(
        offsets[2]["offset"].as_u64().unwrap(),
        offsets[0]["offset"].as_u64().unwrap() + 1
    );
    assert_eq!(
        offsets[1],
        json!({"partition": 1, "offset": offsets[1]["offset"]})
    );

    let (status, read) = get(
        &f,
        "/api/v1/topics/events/partitions/1/records?offset=0&limit=10",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    let values: Vec<&Value> = read["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["value"])
        .collect();
    assert!(
        values.contains(&&json!("2")) && values.contains(&&json!("3")),
        "{read}"
    );
    assert_eq!(read["next_offset"], read["high_watermark"]);
    let (_, one) = get(&f, "/api/v1/topics/events/partitions/1/records?limit=1").await;
    assert_eq!(one["records"].as_array().unwrap().len(), 1);
    assert_eq!(one["next_offset"], 1);
    let keyed = offsets[0]["partition"].as_u64().unwrap();
    let (_, tomb) = get(
        &f,
        &format!("/api/v1/topics/events/partitions/{keyed}/records"),
    )
    .await;
    assert!(
        tomb["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["key"] == "a" && r["value"].is_null()),
        "{tomb}"
    );

    assert_error(
        &post(&f, "/api/v1/topics/events/records", r#"{"records":[]}"#).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &post(
            &f,
            "/api/v1/topics/events/records",
            r#"{"records":[{"value":"x","partition":9}]}"#,
        )
        .await,
        StatusCode::NOT_FOUND,
        "unknown_partition",
    );
    assert_error(
        &post(
            &f,
            "/api/v1/topics/nope/records",
            r#"{"records":[{"value":"x"}]}"#,
        )
        .await,
        StatusCode::NOT_FOUND,
        "unknown_topic",
    );
    assert_error(
        &get(&f, "/api/v1/topics/events/partitions/0/records?limit=0").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &get(&f, "/api/v1/topics/events/partitions/0/records?limit=5000").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &get(&f, "/api/v1/topics/events/partitions/0/records?offset=-1").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &get(&f, "/api/v1/topics/events/partitions/7/records").await,
        StatusCode::NOT_FOUND,
        "unknown_partition",
    );
}

#[tokio::test]
async fn groups_are_listed_and_described_with_lag() {
    let f = fixture("groups");
    post(&f, "/api/v1/topics", r#"{"name":"jobs","partitions":1}"#).await;
    post(
        &f,
        "/api/v1/topics/jobs/records",
        r#"{"records":[{"value":"a"},{"value":"b"},{"value":"c"}]}"#,
    )
    .await;
    assert_eq!(get(&f, "/api/v1/groups").await.1, json!({"groups": []}));
    // A commit as OffsetCommit stores it, outside any generation.
    let groups = f.broker.groups();
    groups
        .with(|c, now, _| {
            c.commit_allowed(
                now,
                &runnel_group::MemberRef {
                    group_id: "workers".into(),
                    generation_id: -1,
                    ..Default::default()
                },
            )
        })
        .unwrap();
    let commit = Committed {
        offset: 1,
        leader_epoch: -1,
        metadata: "m".into(),
        commit_ms: 0,
    };
    groups
        .offsets
        .write("workers", &[(("jobs".into(), 0), Some(commit))])
        .unwrap();

    let (_, list) = get(&f, "/api/v1/groups").await;
    assert_eq!(list["groups"][0]["group"], "workers");
    assert_eq!(list["groups"][0]["state"], "Empty");
    let (status, d) = get(&f, "/api/v1/groups/workers").await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["offsets"][0]["committed"], 1);
    assert_eq!(d["offsets"][0]["end"], 3);
    assert_eq!(d["offsets"][0]["lag"], 2);
    assert_eq!(d["offsets"][0]["metadata"], "m");
    assert_error(
        &get(&f, "/api/v1/groups/nobody").await,
        StatusCode::NOT_FOUND,
        "unknown_group",
    );

    // Prometheus text, parsed back: every sample belongs to a declared family.
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let resp = runnel_http::router(f.broker.clone())
        .oneshot(req)
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text =
        String::from_utf8(to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    let samples = parse_prometheus(&text);
    assert_eq!(
        samples[&(
            "runnel_group_lag_records".to_string(),
            "group=workers,partition=0,topic=jobs".to_string()
        )],
        2.0
    );
    assert_eq!(
        samples[&(
            "runnel_partition_high_watermark".to_string(),
            "partition=0,topic=jobs".to_string()
        )],
        3.0
    );
    assert!(
        samples[&(
            "runnel_partition_size_bytes".to_string(),
            "partition=0,topic=jobs".to_string()
        )] > 0.0
    );
    assert_eq!(
        samples[&("runnel_connections".to_string(), String::new())],
        0.0
    );
    assert!(samples.contains_key(&(
        "runnel_requests_total".to_string(),
        "api=Produce".to_string()
    )));
}

/// A small parser of the Prometheus text format: `(name, sorted labels) -> value`. It
/// checks that every sample follows a `# TYPE` line of its family.
fn parse_prometheus(text: &str) -> BTreeMap<(String, String), f64> {
    let mut typed = BTreeSet::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').unwrap()),
            None => (series, ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample before its TYPE: {line}");
        let mut pairs: Vec<String> = if labels.is_empty() {
            Vec::new()
        } else {
            labels
                .split(',')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    format!("{k}={}", v.trim_matches('"'))
                })
                .collect()
        };
        pairs.sort();
        out.insert(
            (name.to_string(), pairs.join(",")),
            value.parse::<f64>().unwrap(),
        );
    }
    out
}

#[tokio::test]
async fn the_openapi_description_names_exactly_the_routes_served() {
    let f = fixture("openapi");
    let (status, spec) = get(&f, "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spec["openapi"], "3.0.3");
    let mut described = BTreeSet::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            described.insert((method.clone(), path.clone()));
        }
    }
    post(&f, "/api/v1/topics", r#"{"name":"t"}"#).await;
    let mut served = BTreeSet::new();
    for (method, path) in runnel_http::openapi()["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), p.clone()))
                .collect::<Vec<_>>()
        })
    {
        // Every described route is routed: it never falls through to "no_route" or 405.
        let uri = path
            .replace("{topic}", "t")
            .replace("{partition}", "0")
            .replace("{group}", "g");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let body = (m == Method::POST).then_some("{}");
        let (status, value) = call(&f, m, &uri, body).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_ne!(value["code"], "no_route", "{method} {path}");
        served.insert((method, path));
    }
    assert_eq!(described, served);
    let routes: BTreeSet<(String, String)> = runnel_http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        described, routes,
        "the description and the route table agree"
    );
}

/// Reads server-sent events from `body` until one contains `needle` (10 s at most).
async fn read_until(body: &mut Body, needle: &str) -> String {
    use http_body_util::BodyExt;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.contains(needle) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("{needle:?} never arrived; got {seen:?}"))
            .expect("the stream ended")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    seen
}

#[tokio::test]
async fn a_live_tail_streams_stored_and_new_records() {
    let f = fixture("tail");
    post(&f, "/api/v1/topics", r#"{"name":"live","partitions":2}"#).await;
    post(
        &f,
        "/api/v1/topics/live/records",
        r#"{"records":[{"value":"before","partition":0}]}"#,
    )
    .await;
    let req = Request::builder()
        .uri("/api/v1/topics/live/tail?from=earliest")
        .body(Body::empty())
        .unwrap();
    let resp = runnel_http::router(f.broker.clone())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let first = read_until(&mut body, "before").await;
    assert!(first.contains("event: record"), "{first}");
    assert!(first.contains("id: 0:0"), "{first}");
    // Appended while the tail waits: it wakes on the high watermark, on any partition.
    post(
        &f,
        "/api/v1/topics/live/records",
        r#"{"records":[{"key":"k","value":"after","partition":1}]}"#,
    )
    .await;
    let next = read_until(&mut body, "after").await;
    assert!(next.contains(r#""partition":1"#), "{next}");

    // From the end: only what comes next.
    let req = Request::builder()
        .uri("/api/v1/topics/live/tail?partition=0")
        .body(Body::empty())
        .unwrap();
    let mut latest = runnel_http::router(f.broker.clone())
        .oneshot(req)
        .await
        .unwrap()
        .into_body();
    post(
        &f,
        "/api/v1/topics/live/records",
        r#"{"records":[{"value":"newest","partition":0}]}"#,
    )
    .await;
    let got = read_until(&mut latest, "newest").await;
    assert!(!got.contains("before"), "{got}");

    assert_error(
        &get(&f, "/api/v1/topics/live/tail?from=5").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &get(&f, "/api/v1/topics/live/tail?partition=0&from=soon").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &get(&f, "/api/v1/topics/live/tail?partition=9").await,
        StatusCode::NOT_FOUND,
        "unknown_partition",
    );
    assert_error(
        &get(&f, "/api/v1/topics/nope/tail").await,
        StatusCode::NOT_FOUND,
        "unknown_topic",
    );

    // A bounded number of tails: one router (one semaphore) refuses the one too many.
    let router = runnel_http::router(f.broker.clone());
    let mut open = Vec::new();
    for _ in 0..runnel_http::TAILS_MAX {
        let req = Request::builder()
            .uri("/api/v1/topics/live/tail")
            .body(Body::empty())
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        open.push(resp);
    }
    let req = Request::builder()
        .uri("/api/v1/topics/live/tail")
        .body(Body::empty())
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(open);
}

#[tokio::test]
async fn paging_through_a_compacted_topic_reaches_the_end() {
    let f = fixture("compacted");
    post(
        &f,
        "/api/v1/topics",
        r#"{"name":"latest","partitions":1,"config":{"cleanup.policy":"compact","segment.bytes":"1024"}}"#,
    )
    .await;
    // Each request is one batch of three keys; later batches supersede earlier ones, so
    // compaction removes records at the ends of batches too.
    for round in 0..30 {
        let body = format!(
            r#"{{"records":[{{"key":"a","value":"{round}"}},{{"key":"b","value":"{round}"}},{{"key":"c-{}","value":"{round}"}}]}}"#,
            round % 2
        );
        assert_eq!(
            post(&f, "/api/v1/topics/latest/records", &body).await.0,
            StatusCode::OK
        );
    }
    let log = f.broker.log().clone();
    tokio::task::spawn_blocking(move || log.compact_now("latest").unwrap())
        .await
        .unwrap();
    // Page two records at a time from the start: every page moves forward, and the pages
    // end at the high watermark with each key's latest value.
    let mut next = 0u64;
    let mut latest = BTreeMap::new();
    let mut seen = 0;
    for _ in 0..200 {
        let (status, page) = get(
            &f,
            &format!("/api/v1/topics/latest/partitions/0/records?offset={next}&limit=2"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for r in page["records"].as_array().unwrap() {
            latest.insert(r["key"].as_str().unwrap().to_string(), r["value"].clone());
            seen += 1;
        }
        let after = page["next_offset"].as_u64().unwrap();
        if after >= page["high_watermark"].as_u64().unwrap() {
            next = after;
            break;
        }
        assert!(after > next, "a page must move forward: {page}");
        next = after;
    }
    assert_eq!(next, 90, "paging reached the end");
    assert!(
        seen < 60,
        "compaction removed superseded records: {seen} read"
    );
    assert_eq!(latest["a"], json!("29"));
    assert_eq!(latest["c-1"], json!("29"));
    assert_eq!(latest["c-0"], json!("28"));
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy_and_its_api_additions_answer() {
    let f = fixture("console");
    // The page, its script and style, each with its type and the content policy.
    for (uri, kind) in [
        ("/", "text/html"),
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
    ] {
        let resp = runnel_http::router(f.broker.clone())
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        let h = resp.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{uri}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
    }

    // Records carry their headers; bytes that are not UTF-8 also come as hex.
    post(&f, "/api/v1/topics", r#"{"name":"c","partitions":1}"#).await;
    let (status, _) = post(
        &f,
        "/api/v1/topics/c/records",
        r#"{"records":[{"key":"k","value":"{\"a\":1}","headers":{"h1":"v1","ce_type":"x"}},{"value":"two"},{"value":"three"}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let binary = runnel_log::batch::build_batch(
        &[(Some(&[0xff, 0x00][..]), Some(&[0xc3, 0x28][..]))],
        4_000_000_000_000,
    );
    let part = f
        .broker
        .log()
        .partition("c", runnel_log::PartitionId(0))
        .unwrap();
    part.append(&binary).unwrap();
    let (_, page) = get(&f, "/api/v1/topics/c/partitions/0/records").await;
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(
        records[0]["headers"],
        json!([{"key": "ce_type", "value": "x", "value_hex": null}, {"key": "h1", "value": "v1", "value_hex": null}])
    );
    assert_eq!(records[0]["value_hex"], Value::Null);
    assert_eq!(records[3]["key_hex"], "ff00");
    assert_eq!(records[3]["value_hex"], "c328");
    // The newest records, and a start by time.
    let (_, newest) = get(
        &f,
        "/api/v1/topics/c/partitions/0/records?from=newest&limit=2",
    )
    .await;
    let offsets: Vec<i64> = newest["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 3]);
    let (_, by_time) = get(
        &f,
        "/api/v1/topics/c/partitions/0/records?timestamp=3000000000000",
    )
    .await;
    assert_eq!(by_time["records"][0]["offset"], 3);
    assert_error(
        &get(&f, "/api/v1/topics/c/partitions/0/records?from=middle").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );

    // The overview counts what is there.
    let (status, o) = get(&f, "/api/v1/overview").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(o["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(o["topics"], 1);
    assert_eq!(o["partitions"], 1);
    assert_eq!(
        o["records_in"], 3,
        "records produced through the core are counted"
    );
    assert!(o["disk_bytes"].as_u64().unwrap() > 0);
    // The list carries what the console's topics page shows, in one request.
    let (_, list) = get(&f, "/api/v1/topics").await;
    let c = &list["topics"][0];
    assert_eq!(c["name"], "c");
    assert_eq!(c["end_offsets"], 4);
    assert_eq!(c["records_in"], 3);
    assert_eq!(c["size_bytes"], o["disk_bytes"]);

    // A browser on another origin cannot change anything; this origin can.
    let cross = Request::post("/api/v1/topics")
        .header("content-type", "application/json")
        .header("host", "127.0.0.1:8080")
        .header("origin", "http://evil.example")
        .body(Body::from(r#"{"name":"x"}"#))
        .unwrap();
    let resp = runnel_http::router(f.broker.clone())
        .oneshot(cross)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(f.broker.log().topic("x").is_none());
    let same = Request::delete("/api/v1/topics/c")
        .header("host", "127.0.0.1:8080")
        .header("origin", "http://127.0.0.1:8080")
        .body(Body::empty())
        .unwrap();
    let resp = runnel_http::router(f.broker.clone())
        .oneshot(same)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn the_topology_names_recent_producers_topics_and_groups() {
    let f = fixture("topology");
    post(&f, "/api/v1/topics", r#"{"name":"orders","partitions":1}"#).await;
    let flows = f.broker.core().flows();
    flows.record(
        "cashier",
        "orders",
        runnel_core::flows::Direction::Produce,
        300,
        3,
    );
    flows.record(
        "barista-1",
        "orders",
        runnel_core::flows::Direction::Fetch,
        300,
        3,
    );
    let (status, t) = get(&f, "/api/v1/topology").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t["topics"], json!(["orders"]));
    assert_eq!(t["producers"][0]["client_id"], "cashier");
    assert_eq!(t["producers"][0]["records"], 3);
    assert_eq!(t["fetchers"][0]["client_id"], "barista-1");
    assert_eq!(t["fetchers"][0]["bytes"], 300);
    assert!(t["producers"][0]["last_ms"].as_i64().unwrap() <= t["now_ms"].as_i64().unwrap());
}

#[tokio::test]
async fn a_groups_offsets_are_reset_with_a_dry_run_first_and_an_empty_group_deleted() {
    let f = fixture("reset");
    post(&f, "/api/v1/topics", r#"{"name":"jobs","partitions":2}"#).await;
    for p in 0..2 {
        let body = format!(
            r#"{{"records":[{{"value":"a","partition":{p}}},{{"value":"b","partition":{p}}},{{"value":"c","partition":{p}}}]}}"#
        );
        post(&f, "/api/v1/topics/jobs/records", &body).await;
    }
    let commit = |offset| Committed {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_ms: 1,
    };
    f.broker
        .groups()
        .offsets
        .write(
            "workers",
            &[
                (("jobs".into(), 0), Some(commit(1))),
                (("jobs".into(), 1), Some(commit(3))),
            ],
        )
        .unwrap();
    // A dry run says where each partition would go and changes nothing.
    let (status, plan) = post(
        &f,
        "/api/v1/groups/workers/offsets",
        r#"{"topic":"jobs","to":"earliest","dry_run":true}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(
        plan["offsets"],
        json!([
            {"topic": "jobs", "partition": 0, "from": 1, "to": 0},
            {"topic": "jobs", "partition": 1, "from": 3, "to": 0}
        ])
    );
    assert_eq!(
        f.broker
            .groups()
            .offsets
            .get("workers", "jobs", 0)
            .unwrap()
            .offset,
        1
    );
    // Then for real: an offset beyond the end is kept within the log.
    let (status, done) = post(
        &f,
        "/api/v1/groups/workers/offsets",
        r#"{"topic":"jobs","to":"offset","value":99}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(
        f.broker
            .groups()
            .offsets
            .get("workers", "jobs", 0)
            .unwrap()
            .offset,
        3
    );
    let (_, described) = get(&f, "/api/v1/groups/workers").await;
    assert_eq!(described["offsets"][0]["lag"], 0);
    assert_error(
        &post(
            &f,
            "/api/v1/groups/workers/offsets",
            r#"{"topic":"jobs","to":"offset"}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &post(
            &f,
            "/api/v1/groups/workers/offsets",
            r#"{"topic":"nope","to":"latest"}"#,
        )
        .await,
        StatusCode::NOT_FOUND,
        "unknown_topic",
    );
    // Deleting the group (known by its offsets) removes them; a second time it is gone.
    let (status, _) = call(&f, Method::DELETE, "/api/v1/groups/workers", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(f.broker.groups().offsets.group("workers").is_empty());
    assert_error(
        &call(&f, Method::DELETE, "/api/v1/groups/workers", None).await,
        StatusCode::NOT_FOUND,
        "unknown_group",
    );
}

#[tokio::test]
async fn services_are_listed_from_their_status_and_a_dead_letter_is_replayed() {
    use runnel_core::encode::NewRecord;
    let f = fixture("services");
    for (name, partitions) in [("runnel.services", 1), ("orders", 1), ("billing.dlq", 1)] {
        let body = format!(r#"{{"name":"{name}","partitions":{partitions}}}"#);
        post(&f, "/api/v1/topics", &body).await;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let status = |instance: &str, at: i64, stopped: bool| NewRecord {
        key: Some(format!("billing/{instance}").into_bytes()),
        value: Some(
            json!({"service": "billing", "instance": instance, "ready": !stopped,
                   "stopped": stopped, "handled": 7, "at_ms": at})
            .to_string()
            .into_bytes(),
        ),
        ..Default::default()
    };
    let core = f.broker.core();
    core.produce(
        "runnel.services",
        vec![
            (None, status("0", now - 60_000, false)),
            (None, status("0", now, false)),
            (None, status("1", now, true)),
        ],
    )
    .unwrap();
    let dead = NewRecord {
        key: Some(b"o1".to_vec()),
        value: Some(b"{\"order\":\"o1\"}".to_vec()),
        headers: vec![
            ("ce_type".into(), b"orderCreated".to_vec()),
            ("runnel_dlq_topic".into(), b"orders".to_vec()),
            ("runnel_dlq_error".into(), b"boom".to_vec()),
        ],
        timestamp_ms: None,
    };
    core.produce("billing.dlq", vec![(None, dead)]).unwrap();

    let (status_code, listed) = get(&f, "/api/v1/services").await;
    assert_eq!(status_code, StatusCode::OK);
    let billing = &listed["services"][0];
    assert_eq!(billing["service"], "billing");
    assert_eq!(
        billing["up"], 1,
        "instance 0 up (its latest status), 1 stopped"
    );
    assert_eq!(billing["dead_letters"], 1);
    assert_eq!(billing["dead_letter_topic"], "billing.dlq");
    let instances = billing["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    assert_eq!(
        (instances[0]["up"].clone(), instances[0]["handled"].clone()),
        (json!(true), json!(7))
    );
    assert_eq!(instances[1]["up"], false);

    let (code, replayed) = post(
        &f,
        "/api/v1/services/billing/dead-letters/replay",
        r#"{"partition":0,"offset":0}"#,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{replayed}");
    assert_eq!(replayed["topic"], "orders");
    let (_, page) = get(&f, "/api/v1/topics/orders/partitions/0/records").await;
    let r = &page["records"][0];
    assert_eq!(r["value"], "{\"order\":\"o1\"}");
    assert_eq!(
        r["headers"],
        json!([
            {"key": "ce_type", "value": "orderCreated", "value_hex": null},
            {"key": "runnel_replayed_from", "value": "billing.dlq@0", "value_hex": null}
        ])
    );
    assert_error(
        &post(
            &f,
            "/api/v1/services/billing/dead-letters/replay",
            r#"{"partition":0,"offset":5}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "offset_out_of_range",
    );
}

#[tokio::test]
async fn a_topics_settings_are_changed_and_returned_to_the_default() {
    let f = fixture("config");
    post(&f, "/api/v1/topics", r#"{"name":"cfg","partitions":1}"#).await;
    let (status, t) = post(
        &f,
        "/api/v1/topics/cfg/config",
        r#"{"set":{"retention.ms":"3600000","cleanup.policy":"compact"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(
        t["config"]["retention.ms"],
        json!({"value": "3600000", "overridden": true})
    );
    let (_, t) = post(
        &f,
        "/api/v1/topics/cfg/config",
        r#"{"remove":["retention.ms"]}"#,
    )
    .await;
    assert_eq!(t["config"]["retention.ms"]["overridden"], false);
    assert_eq!(
        t["config"]["cleanup.policy"]["value"], "compact",
        "what is not named stays"
    );
    let bad = post(
        &f,
        "/api/v1/topics/cfg/config",
        r#"{"set":{"retention.ms":"soon"}}"#,
    )
    .await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{}", bad.1);
    let (_, t) = get(&f, "/api/v1/topics/cfg").await;
    assert_eq!(
        t["config"]["cleanup.policy"]["value"], "compact",
        "a refused change changes nothing"
    );
    let internal = post(
        &f,
        "/api/v1/topics/__consumer_offsets/config",
        r#"{"remove":[]}"#,
    )
    .await;
    assert_eq!(internal.0, StatusCode::BAD_REQUEST);
}
