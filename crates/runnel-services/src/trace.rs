//! W3C Trace Context: the `traceparent` a record carries so one trace spans services.
//!
//! Format (version `00`, <https://www.w3.org/TR/trace-context/#traceparent-header>):
//!
//! | bytes | field | rule |
//! |---|---|---|
//! | 2 | version | `00`; anything else is refused (see [`TraceParent::parse`]) |
//! | 1 | `-` | |
//! | 32 | trace-id | lowercase hex, not all zeros |
//! | 1 | `-` | |
//! | 16 | parent-id | lowercase hex, not all zeros: the span that sent the record |
//! | 1 | `-` | |
//! | 2 | trace-flags | lowercase hex; bit 0 = sampled |

use std::fmt;

/// Trace flag bit 0: the caller may have recorded this trace.
const FLAG_SAMPLED: u8 = 0x01;

/// The length of a version-00 `traceparent`.
const TRACEPARENT_LEN: usize = 55;

/// A parsed W3C `traceparent`: which trace a record belongs to and which span sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The whole distributed trace; shared by every span in it. Never all zeros.
    trace_id: [u8; 16],
    /// The span that produced the record; a handler's span becomes its child. Never all zeros.
    parent_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    flags: u8,
}

impl TraceParent {
    /// A trace parent from its parts, or `None` if either id is all zeros (invalid per W3C).
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Option<Self> {
        let valid = trace_id != [0; 16] && parent_id != [0; 8];
        valid.then_some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Parses a version-00 `traceparent` header.
    ///
    /// Stricter than the W3C's forward-compatibility rule, which lets a reader accept a
    /// higher version by reading its first 55 characters: we only know version 00, and a
    /// refused header just starts a new trace, which loses a link and nothing else.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != TRACEPARENT_LEN
            || bytes[2] != b'-'
            || bytes[35] != b'-'
            || bytes[52] != b'-'
        {
            return None;
        }
        let version: [u8; 1] = hex_array(&bytes[0..2])?;
        if version != [0] {
            return None;
        }
        let trace_id = hex_array(&bytes[3..35])?;
        let parent_id = hex_array(&bytes[36..52])?;
        let [flags] = hex_array(&bytes[53..55])?;
        Self::new(trace_id, parent_id, flags)
    }

    /// The start of a new trace: random trace and span ids, sampled.
    pub fn new_root(rng: &mut impl FnMut() -> u64) -> Self {
        let high = rng().to_be_bytes();
        let low = rng().to_be_bytes();
        let mut trace_id = [0; 16];
        trace_id[..8].copy_from_slice(&high);
        trace_id[8..].copy_from_slice(&low);
        if trace_id == [0; 16] {
            // Only a rigged generator gets here; keep the id valid rather than loop forever.
            trace_id[15] = 1;
        }
        Self {
            trace_id,
            parent_id: span_id(rng),
            flags: FLAG_SAMPLED,
        }
    }

    /// A new span in the same trace, to put on records this span emits: same trace id and
    /// flags, a fresh random span id.
    pub fn child(&self, rng: &mut impl FnMut() -> u64) -> Self {
        Self {
            parent_id: span_id(rng),
            ..*self
        }
    }

    /// The 16-byte trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The 8-byte id of the span that sent the record.
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags byte.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the sender marked the trace as sampled (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        write_hex(f, &self.trace_id)?;
        f.write_str("-")?;
        write_hex(f, &self.parent_id)?;
        write!(f, "-{:02x}", self.flags)
    }
}

/// A random span id that is never all zeros.
fn span_id(rng: &mut impl FnMut() -> u64) -> [u8; 8] {
    let id = rng();
    // Only a rigged generator draws zero; keep the id valid rather than loop forever.
    (if id == 0 { 1 } else { id }).to_be_bytes()
}

/// Decodes exactly `2 * N` lowercase hex digits.
fn hex_array<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(out)
}

/// One lowercase hex digit; W3C forbids uppercase.
fn hex_digit(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use proptest::prelude::*;

    /// The example from the W3C recommendation.
    const W3C_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn parses_the_w3c_example() {
        let parent = TraceParent::parse(W3C_EXAMPLE).unwrap();
        assert_eq!(parent.trace_id()[0], 0x4b);
        assert_eq!(parent.trace_id()[15], 0x36);
        assert_eq!(
            parent.parent_id(),
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(parent.flags(), 1);
        assert!(parent.sampled());
        assert_eq!(parent.to_string(), W3C_EXAMPLE);
    }

    #[test]
    fn refuses_what_w3c_forbids_or_we_do_not_know() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        let upper = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        let version_ff = "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let version_01 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let too_long = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx";
        let wrong_dash = "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let not_hex = "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01";
        let plus_sign = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1";
        for bad in [
            "",
            zero_trace,
            zero_parent,
            upper,
            version_ff,
            version_01,
            too_long,
            wrong_dash,
            not_hex,
            plus_sign,
            &W3C_EXAMPLE[..54],
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn new_refuses_zero_ids() {
        assert!(TraceParent::new([0; 16], [1; 8], 0).is_none());
        assert!(TraceParent::new([1; 16], [0; 8], 0).is_none());
        assert!(TraceParent::new([1; 16], [1; 8], 0).is_some());
    }

    #[test]
    fn root_is_sampled_and_child_keeps_the_trace() {
        let mut rng = counter();
        let root = TraceParent::new_root(&mut rng);
        assert!(root.sampled());
        let child = root.child(&mut rng);
        assert_eq!(child.trace_id(), root.trace_id());
        assert_eq!(child.flags(), root.flags());
        assert_ne!(child.parent_id(), root.parent_id());
    }

    #[test]
    fn a_generator_stuck_at_zero_still_yields_valid_ids() {
        let mut zero = || 0;
        let root = TraceParent::new_root(&mut zero);
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
        let child = root.child(&mut zero);
        assert_eq!(TraceParent::parse(&child.to_string()), Some(child));
    }

    #[test]
    fn children_get_distinct_span_ids() {
        let mut rng = SplitMix64::new(1);
        let mut draw = || rng.next_u64();
        let root = TraceParent::new_root(&mut draw);
        let a = root.child(&mut draw);
        let b = root.child(&mut draw);
        assert_ne!(a.parent_id(), b.parent_id());
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(trace in any::<[u8; 16]>(), parent in any::<[u8; 8]>(), flags: u8) {
            if let Some(value) = TraceParent::new(trace, parent, flags) {
                let text = value.to_string();
                prop_assert_eq!(text.len(), TRACEPARENT_LEN);
                prop_assert_eq!(TraceParent::parse(&text), Some(value));
            }
        }

        #[test]
        fn parse_never_panics(text in ".{0,70}") {
            let _ = TraceParent::parse(&text);
        }
    }
}
