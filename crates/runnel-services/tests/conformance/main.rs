//! The transport conformance suite: the same scenarios on every transport. A transport
//! is done when this suite is green on it.
//!
//! Each scenario takes a fresh [`TestRuntime`]; `embedded.rs` and `kafka.rs` (feature
//! `kafka`, against a `runnel serve` on port 0) instantiate them all.

mod scenarios;

mod embedded {
    use runnel_services::TestRuntime;

    async fn harness() -> (TestRuntime, ()) {
        (TestRuntime::embedded().await.expect("embedded harness"), ())
    }

    crate::conformance!(harness);
}

#[cfg(feature = "kafka")]
#[path = "../common/mod.rs"]
mod common;

/// The same scenarios over rdkafka, against a `runnel serve` on port 0.
#[cfg(feature = "kafka")]
mod kafka {
    use runnel_services::TestRuntime;

    use crate::common::TestBroker;

    async fn harness() -> (TestRuntime, TestBroker) {
        let broker = TestBroker::start("conformance");
        let t = TestRuntime::on(broker.kafka(), broker.dir.0.join("services"));
        (t, broker)
    }

    crate::conformance!(harness);
}

/// Instantiates every scenario as a test, with `$make` building the harness.
#[macro_export]
macro_rules! conformance {
    ($make:path) => {
        $crate::conformance!(@tests $make;
            per_key_order,
            group_split_and_fan_out,
            commit_and_resume_after_a_crash,
            rebalance_while_handling,
            retries_with_backoff,
            parking_holds_only_its_key,
            dead_letters_and_replay,
            table_restore_and_readiness,
            undecodable_and_unknown_records,
            emitted_events_carry_ids_derived_from_the_input,
            graceful_stop_commits_and_leaves,
            a_panicking_handler_is_retried_then_dead_lettered,
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                // The guard (a broker, for Kafka) outlives the scenario.
                let (t, _guard) = $make().await;
                $crate::scenarios::$name(t).await;
            }
        )*
    };
}
