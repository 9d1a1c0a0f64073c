//! Architecture invariant: the storage engine knows nothing of the network or of Kafka's
//! wire types. This reads the crate's own manifest so a new dependency that breaks the
//! boundary fails here, with the reason.

#[test]
fn the_storage_engine_has_no_network_or_protocol_dependencies() {
    let manifest = include_str!("../Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] table");
    for banned in [
        "kafka-protocol",
        "runnel-broker",
        "rdkafka",
        "axum",
        "hyper",
        "reqwest",
        "mio",
    ] {
        assert!(
            !deps.contains(banned),
            "runnel-log must not depend on {banned}"
        );
    }
    let tokio = deps
        .lines()
        .find(|l| l.starts_with("tokio"))
        .expect("tokio (sync only)");
    assert!(
        tokio.contains(r#"features = ["sync"]"#),
        "runnel-log may use tokio only for its sync primitives: {tokio}"
    );
}
