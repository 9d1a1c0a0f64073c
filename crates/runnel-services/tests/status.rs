//! A running instance states its status on `runnel.services`: ready, its counters and
//! topics, and a last record marked stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_services::status::STATUS_TOPIC;
use runnel_services::transport::{Record, TopicPartition};
use runnel_services::{
    Embedded, EmbeddedConfig, HandlerError, Runtime, Service, Transport, event, event_record,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Ping {
    id: String,
}
event!(Ping, type = "ping", topic = "pings", key = |e| e.id.clone());

async fn pong(_p: Ping) -> Result<(), HandlerError> {
    Ok(())
}

/// Every status record so far, as JSON.
async fn statuses(t: &dyn Transport) -> Vec<Value> {
    // Until the instance created the topic, there is nothing to read.
    let Ok(mut reader) = t.reader(vec![(TopicPartition::new(STATUS_TOPIC, 0), 0)]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    loop {
        let Ok(got) = reader.poll(Duration::from_millis(100)).await else {
            return out;
        };
        let got: Vec<Record> = got;
        if got.is_empty() {
            return out;
        }
        for r in got {
            out.push(serde_json::from_slice(r.value.as_deref().unwrap()).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_states_that_it_is_ready_what_it_did_and_that_it_stopped() {
    let dir = std::env::temp_dir().join(format!("runnel-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let e = Embedded::open(EmbeddedConfig::new(dir.join("log"))).unwrap();
    let t: Arc<dyn Transport> = e.clone();
    t.ensure_topics(&[runnel_services::transport::TopicSpec {
        name: "pings".into(),
        partitions: 1,
        compacted: false,
    }])
    .await
    .unwrap();
    let trace = runnel_services::TraceParent::new_root(&mut || 1);
    t.send(vec![event_record(
        &Ping { id: "a".into() },
        "p1",
        "test",
        &trace,
    )])
    .await
    .unwrap();
    let rt = Runtime::new(t.clone()).state_dir(dir.join("state"));
    let h = rt
        .start(Service::new("ponger").on::<Ping, _>(pong), "0")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        assert!(
            Instant::now() < deadline,
            "no ready status with the ping handled"
        );
        let all = statuses(&*t).await;
        if let Some(s) = all
            .iter()
            .rev()
            .find(|s| s["ready"] == true && s["handled"] == 1)
        {
            break s.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready["service"], "ponger");
    assert_eq!(ready["instance"], "0");
    assert_eq!(ready["transport"], "embedded");
    assert_eq!(ready["topics"], serde_json::json!(["pings"]));
    assert_eq!(ready["dead_letter_topic"], "ponger.dlq");
    assert_eq!(ready["stopped"], false);
    h.stop().await.unwrap();
    let last = statuses(&*t).await.pop().unwrap();
    assert_eq!(
        (last["stopped"].clone(), last["ready"].clone()),
        (true.into(), false.into())
    );
    e.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
