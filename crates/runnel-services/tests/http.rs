//! The HTTP face end to end: a real service on the embedded log, a server on port 0 and
//! a hand-written HTTP/1.1 client over TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_services::http::BODY_BYTES_MAX;
use runnel_services::{
    Accepted, Command, CommandError, Emitter, HandlerError, Runtime, Service, ServiceApi, Table,
    TableRef, TestRuntime, event, headers,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct CustomerRegistered {
    id: String,
    email: String,
}
event!(CustomerRegistered, type = "customerRegistered", topic = "customers", key = |e| e.id.clone());

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct WelcomeSent {
    id: String,
}
event!(WelcomeSent, type = "welcomeSent", topic = "welcomes", key = |e| e.id.clone());

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Customer {
    email: String,
}

#[derive(Debug, Deserialize)]
struct RegisterCustomer {
    id: String,
    email: String,
}

impl Command for RegisterCustomer {
    fn validate(&self) -> Result<(), String> {
        if !self.email.contains('@') {
            return Err(format!("{:?} is not an email address", self.email));
        }
        Ok(())
    }
}

async fn welcome(c: CustomerRegistered, emit: Emitter) -> Result<(), HandlerError> {
    emit.emit(&WelcomeSent { id: c.id });
    Ok(())
}

fn customers_table() -> Table<Customer> {
    Table::named("customers").upsert::<CustomerRegistered>(|e| {
        Some(Customer {
            email: e.email.clone(),
        })
    })
}

fn customers() -> Service {
    Service::new("customers")
        .table(customers_table())
        .on::<CustomerRegistered, _>(welcome)
        .emits::<WelcomeSent>()
        .partitions(2)
}

fn api(t: &TestRuntime, handle: &runnel_services::ServiceHandle) -> ServiceApi {
    let table: TableRef<Customer> = handle.table("customers").unwrap();
    ServiceApi::new(t.transport().clone(), "customers")
        .health(handle)
        .command::<RegisterCustomer, _, _>("/customers", |cmd, out| async move {
            if cmd.id.is_empty() {
                return Err(CommandError::bad_request("id must not be empty"));
            }
            out.emit(&CustomerRegistered {
                id: cmd.id.clone(),
                email: cmd.email,
            });
            Ok(Accepted::with_body(json!({ "customer": cmd.id })))
        })
        .query("/customers/{id}", move |q| {
            let table = table.clone();
            async move {
                let id = q.param("id")?;
                table
                    .get(id)?
                    .ok_or_else(|| CommandError::not_found(format!("no customer {id}")))
            }
        })
}

/// One HTTP/1.1 exchange on a fresh connection: status, headers (lower-cased names),
/// body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let (mut rd, mut wr) = s.split();
    // Write and read at once: a server that refuses a large body answers before
    // reading all of it.
    let write = async {
        let _ = wr.write_all(&request).await;
    };
    let read = async {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    };
    let ((), raw) = tokio::join!(write, read);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, raw[split + 4..].to_vec())
}

async fn json_call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let ct = (method == "POST").then_some("application/json");
    let (status, _, body) = http(addr, method, path, ct, body.as_bytes()).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_queries_and_health_over_tcp_on_the_embedded_log() {
    let mut t = TestRuntime::embedded().await.unwrap();
    let id = t.start(customers()).await.unwrap();
    let bound = api(&t, t.handle(id))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = bound.local_addr();
    assert_ne!(addr.port(), 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));

    // Accepted: the event is in the topic before the answer, under the answered id.
    let (status, v) = json_call(addr, "POST", "/customers", r#"{"id":"c1","email":"a@x"}"#).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["customer"], "c1");
    let records = t.records("customers").await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].header(headers::CE_ID),
        v["id"].as_str().map(str::as_bytes)
    );
    assert_eq!(
        records[0].header(headers::CE_SOURCE),
        Some(&b"customers"[..])
    );
    assert_eq!(
        t.events::<CustomerRegistered>().await.unwrap(),
        [CustomerRegistered {
            id: "c1".into(),
            email: "a@x".into()
        }]
    );

    // Refused: a 4xx JSON error, and nothing more in the topic.
    let too_large = format!(
        r#"{{"id":"c2","email":"{}@x"}}"#,
        "a".repeat(BODY_BYTES_MAX)
    );
    let refusals: [(Option<&str>, &str, u16, &str); 5] = [
        (
            Some("application/json"),
            r#"{"id":"c2","email":"#,
            400,
            "bad_json",
        ),
        (
            Some("application/json"),
            r#"{"id":"c2","email":7}"#,
            400,
            "bad_json",
        ),
        (
            Some("application/json"),
            r#"{"id":"c2","email":"nope"}"#,
            422,
            "invalid_command",
        ),
        (
            Some("text/plain"),
            r#"{"id":"c2","email":"a@x"}"#,
            415,
            "unsupported_media_type",
        ),
        (Some("application/json"), &too_large, 413, "body_too_large"),
    ];
    for (ct, body, want, code) in refusals {
        let (status, _, body) = http(addr, "POST", "/customers", ct, body.as_bytes()).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, v["code"].as_str()), (want, Some(code)), "{v}");
    }
    let (status, v) = json_call(addr, "POST", "/customers", r#"{"id":"","email":"a@x"}"#).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("bad_request")));
    assert_eq!(
        t.records("customers").await.unwrap().len(),
        1,
        "nothing emitted"
    );

    // Queries read the table once the service has caught up.
    t.run_until_idle().await.unwrap();
    let (status, v) = json_call(addr, "GET", "/customers/c1", "").await;
    assert_eq!((status, v), (200, json!({"email": "a@x"})));
    let (status, v) = json_call(addr, "GET", "/customers/c2", "").await;
    assert_eq!(
        (status, v),
        (404, json!({"error": "no customer c2", "code": "not_found"}))
    );
    assert_eq!(
        t.events::<WelcomeSent>().await.unwrap().len(),
        1,
        "the service handled it"
    );

    // The rest of the surface.
    let (status, v) = json_call(addr, "GET", "/nowhere", "").await;
    assert_eq!((status, v["code"].as_str()), (404, Some("no_route")));
    let (status, headers, _) = http(addr, "DELETE", "/customers", None, b"").await;
    assert_eq!(status, 405);
    assert!(
        headers.contains(&("allow".into(), "POST".into())),
        "{headers:?}"
    );
    assert_eq!(
        json_call(addr, "GET", "/health/live", "").await,
        (200, json!({"live": true}))
    );
    assert_eq!(
        json_call(addr, "GET", "/health/ready", "").await,
        (200, json!({"ready": true}))
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_a_table_restore_and_metrics_show_the_instance() {
    let t = TestRuntime::embedded().await.unwrap();
    // A backlog for the table to restore before the instance is ready.
    let backlog: Vec<CustomerRegistered> = (0..3000)
        .map(|i| CustomerRegistered {
            id: format!("c{i}"),
            email: format!("{i}@x"),
        })
        .collect();
    t.transport()
        .ensure_topics(&[runnel_services::transport::TopicSpec {
            name: "customers".into(),
            partitions: 2,
            compacted: false,
        }])
        .await
        .unwrap();
    for chunk in backlog.chunks(500) {
        let records = chunk
            .iter()
            .map(|e| runnel_services::event_record(e, &e.id, "test", &root_trace()))
            .collect();
        t.transport().send(records).await.unwrap();
    }

    let audit = Service::new("audit").table(customers_table());
    let runtime = Runtime::new(t.transport().clone()).state_dir(t.dir().join("audit"));
    let handle = Arc::new(runtime.start(audit, "0").await.unwrap());
    let bound = ServiceApi::new(t.transport().clone(), "audit")
        .health(&handle)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = bound.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));

    // 503 (naming the instance) while restoring, then 200 for good.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut not_ready_seen = 0;
    loop {
        let (status, v) = json_call(addr, "GET", "/health/ready", "").await;
        if status == 200 {
            assert_eq!(v, json!({"ready": true}));
            break;
        }
        assert_eq!(status, 503, "{v}");
        assert_eq!(v["not_ready"], json!(["audit/0"]));
        not_ready_seen += 1;
        assert!(Instant::now() < deadline, "not ready in time");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(handle.is_ready());
    let table: TableRef<Customer> = handle.table("customers").unwrap();
    assert_eq!(table.len().unwrap(), 3000, "ready means restored");
    for _ in 0..3 {
        assert_eq!(
            json_call(addr, "GET", "/health/ready", "").await.0,
            200,
            "stays ready"
        );
    }
    // The restore of 3000 records takes far longer than the first request (about 60
    // answers of 503 on this machine): a 200 at once would mean readiness ignored it.
    assert!(not_ready_seen > 0, "a 503 while restoring");

    let (status, headers, body) = http(addr, "GET", "/metrics", None, b"").await;
    assert_eq!(status, 200);
    assert!(
        headers.contains(&(
            "content-type".into(),
            "text/plain; version=0.0.4; charset=utf-8".into()
        )),
        "{headers:?}"
    );
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains(r#"runnel_service_handled_total{service="audit",instance="0"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"runnel_service_table_records_total{service="audit",instance="0"} 3000"#),
        "{text}"
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let handle = Arc::try_unwrap(handle).expect("the server let go of the instance");
    handle.stop().await.unwrap();
    t.shutdown().await.unwrap();
}

fn root_trace() -> runnel_services::TraceParent {
    runnel_services::TraceParent::new_root(&mut || 7)
}
