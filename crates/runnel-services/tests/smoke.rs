//! A first end-to-end run on the embedded transport: a table, a join, an emit.

use std::sync::Arc;
use std::time::Duration;

use runnel_services::{
    Embedded, EmbeddedConfig, Emitter, HandlerError, Runtime, Service, Table, TableRef, event,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CustomerUpdated {
    id: String,
    email: String,
}
event!(CustomerUpdated, type = "customerUpdated", topic = "customers", key = |e| e.id.clone());

#[derive(Clone, Debug, Serialize, Deserialize)]
struct OrderCreated {
    order: String,
    customer: String,
}
event!(OrderCreated, type = "orderCreated", topic = "orders", key = |e| e.order.clone());

#[derive(Clone, Debug, Serialize, Deserialize)]
struct NotificationSent {
    order: String,
    email: String,
}
event!(NotificationSent, type = "notificationSent", topic = "notifications", key = |e| e.order.clone());

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Customer {
    email: String,
}

async fn notify(
    order: OrderCreated,
    customers: TableRef<Customer>,
    emit: Emitter,
) -> Result<(), HandlerError> {
    let c = customers
        .get(&order.customer)?
        .ok_or_else(|| HandlerError::not_yet("customer unknown"))?;
    emit.emit(&NotificationSent {
        order: order.order,
        email: c.email,
    });
    Ok(())
}

fn notifications() -> Service {
    Service::new("notifications")
        .table(
            Table::<Customer>::named("customers").upsert::<CustomerUpdated>(|e| {
                Some(Customer {
                    email: e.email.clone(),
                })
            }),
        )
        .on::<OrderCreated, _>(notify)
        .emits::<NotificationSent>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_join_and_an_emit() {
    let dir = std::env::temp_dir().join(format!("runnel-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let embedded = Embedded::open(EmbeddedConfig::new(dir.join("log"))).unwrap();
    let rt = Runtime::new(embedded.clone()).state_dir(dir.join("state"));
    let mut h = rt.start(notifications(), "0").await.unwrap();
    h.wait_ready().await.unwrap();
    let t: Arc<dyn runnel_services::Transport> = embedded.clone();
    let trace = runnel_services::TraceParent::new_root(&mut || 42);
    t.send(vec![
        runnel_services::event_record(
            &CustomerUpdated {
                id: "c1".into(),
                email: "a@x".into(),
            },
            "i1",
            "test",
            &trace,
        ),
        runnel_services::event_record(
            &OrderCreated {
                order: "o1".into(),
                customer: "c1".into(),
            },
            "i2",
            "test",
            &trace,
        ),
    ])
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while h.metrics().handled < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "not handled: {:?}",
            h.metrics()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wm = t.watermarks("notifications").await.unwrap();
    assert_eq!(wm.iter().map(|(_, h)| h).sum::<i64>(), 1);
    h.stop().await.unwrap();
    embedded.shutdown();
}
