//! Architecture invariant: runnel-core is shared by the broker, the HTTP API and the
//! embedded transport, so it depends on none of them and on no networking, and of
//! `kafka-protocol` it takes the compression codecs only. This reads the crate's own
//! manifest so a new dependency that breaks the boundary fails here, with the reason.

fn dependencies() -> &'static str {
    include_str!("../Cargo.toml")
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] table")
}

#[test]
fn the_core_depends_on_no_front_end_and_no_network() {
    let deps = dependencies();
    for banned in [
        "runnel-broker",
        "runnel-http",
        "runnel-services",
        "rdkafka",
        "axum",
        "hyper",
        "reqwest",
        "mio",
    ] {
        assert!(
            !deps.lines().any(|l| l.starts_with(banned)),
            "runnel-core must not depend on {banned}"
        );
    }
    let tokio = deps
        .lines()
        .find(|l| l.starts_with("tokio"))
        .expect("tokio (channels and timers)");
    assert!(
        !tokio.contains("\"net\"") && !tokio.contains("\"full\""),
        "runnel-core may not use tokio's networking: {tokio}"
    );
}

#[test]
fn of_kafka_protocol_only_the_codecs() {
    let line = dependencies()
        .lines()
        .find(|l| l.starts_with("kafka-protocol"))
        .expect("kafka-protocol, for its codecs");
    assert!(
        line.contains("default-features = false"),
        "no default features (they include the wire messages): {line}"
    );
    for wire in [
        "\"broker\"",
        "\"client\"",
        "\"messages_enums\"",
        "workspace = true",
    ] {
        assert!(
            !line.contains(wire),
            "runnel-core takes only kafka-protocol's compression: {line}"
        );
    }
}
