//! One request frame body of arbitrary bytes into `Broker::handle_frame`.
//!
//! The broker must not panic, hang or answer with a malformed frame, whatever the bytes.
//! `runnel_fuzz::check_outcome` is the oracle; it is shared with the bounded run in
//! `crates/runnel-broker/tests/fuzz_smoke.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_fuzz::{Harness, check_outcome};

// As in the binary: a lying length prefix reserves address space, not memory.
#[global_allocator]
static ALLOC: runnel_alloc::LazyHuge = runnel_alloc::LazyHuge;

thread_local! {
    // One broker for the whole run: state left by earlier inputs (topics created by
    // Metadata, appended batches, producer ids) is part of what later inputs meet.
    static HARNESS: Harness = Harness::new("request").expect("the fuzz broker starts");
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        let outcome = h.handle(data);
        if let Err(e) = check_outcome(data, &outcome) {
            panic!("bad answer to {data:02x?}: {e}\noutcome: {outcome:?}");
        }
    });
});
