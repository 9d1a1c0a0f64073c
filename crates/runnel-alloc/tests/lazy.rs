//! The allocator installed for real: absurd reservations succeed without using memory,
//! ordinary ones behave as ever.

use runnel_alloc::{HUGE_BYTES_MIN, LazyHuge};

#[global_allocator]
static ALLOC: LazyHuge = LazyHuge;

#[test]
#[cfg(target_os = "linux")]
fn a_reservation_far_beyond_memory_succeeds_and_costs_only_what_is_written() {
    // 150 GB: more than this machine's memory and swap, as a lying length prefix asks.
    let mut v: Vec<u64> = Vec::with_capacity(150_000_000_000 / 8);
    assert!(v.capacity() >= 150_000_000_000 / 8);
    v.extend(0..1000u64);
    assert_eq!(v.iter().sum::<u64>(), 999 * 1000 / 2);
    drop(v);
    // Zeroed huge blocks read as zero.
    let z = vec![0u8; HUGE_BYTES_MIN];
    assert!(
        z[..4096]
            .iter()
            .chain(&z[HUGE_BYTES_MIN - 4096..])
            .all(|b| *b == 0)
    );
}

#[test]
fn growing_across_the_threshold_keeps_the_contents() {
    let mut v: Vec<u8> = Vec::with_capacity(HUGE_BYTES_MIN - 4096);
    v.extend(std::iter::repeat_n(7u8, 10_000));
    v.reserve(HUGE_BYTES_MIN);
    assert!(v.capacity() >= HUGE_BYTES_MIN);
    assert!(v.iter().all(|b| *b == 7));
    v.truncate(100);
    v.shrink_to_fit();
    assert_eq!(v, vec![7u8; 100]);
}

#[test]
fn small_allocations_are_ordinary() {
    let s: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    assert_eq!(s[9_999], "9999");
}
