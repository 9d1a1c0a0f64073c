//! Recoverability: how a failed record is retried, parked or dead-lettered.
//!
//! [`decide`] is a pure function of the policy, the error, the attempt count and a random
//! draw; it does no I/O and reads no clock. The runtime carries the decision out (waits on
//! its [`Clock`](crate::Clock), so tests advance virtual time instead of sleeping).

use std::time::Duration;

use crate::error::{Error, ErrorKind, HandlerError};
use crate::rng::unit_fraction;

/// Exponential backoff with jitter, for transient errors.
///
/// The delay before retry `n` is `min(initial * multiplier^(n-1), max)`, of which the
/// `jitter` fraction is randomised: with `jitter = 0` every client waits exactly that long,
/// with `jitter = 1` ("full jitter") anywhere from zero to it. Jitter keeps the copies of a
/// service from retrying against a recovering dependency in lock-step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub initial: Duration,
    /// The cap; no delay exceeds it, so a long outage is still probed regularly.
    pub max: Duration,
    /// Growth per retry; at least 1.0.
    pub multiplier: f64,
    /// The randomised fraction of each delay, in `0.0..=1.0`.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 100 ms, doubling, capped at 10 s, half of each delay randomised.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The delay before retry `attempt` (1 = the first retry; 0 is treated as 1), drawing
    /// once from `rng` for the jitter.
    ///
    /// Total: out-of-range settings (see [`Backoff::validate`]) are read as the nearest
    /// valid ones, so it never panics and never exceeds `max`.
    pub fn delay(&self, attempt: u32, rng: &mut impl FnMut() -> u64) -> Duration {
        let ceiling_ns = self.ceiling_ns(attempt);
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        let delay_ns = ceiling_ns * (1.0 - jitter) + ceiling_ns * jitter * unit_fraction(rng());
        let max_ns = self.max.as_nanos() as f64;
        // `as` saturates, and both bounds keep the result inside [0, max].
        Duration::from_nanos(delay_ns.clamp(0.0, max_ns) as u64).min(self.max)
    }

    /// The un-jittered delay before retry `attempt`, in nanoseconds, at most `max`.
    fn ceiling_ns(&self, attempt: u32) -> f64 {
        let max_ns = self.max.as_nanos() as f64;
        let initial_ns = (self.initial.as_nanos() as f64).min(max_ns);
        let multiplier = if self.multiplier.is_nan() {
            1.0
        } else {
            self.multiplier.max(1.0)
        };
        let exponent = i32::try_from(attempt.max(1) - 1).unwrap_or(i32::MAX);
        let grown = initial_ns * multiplier.powi(exponent);
        // Infinity (a long run of retries) and NaN (0 * inf) both mean "at the cap".
        if grown.is_finite() {
            grown.min(max_ns)
        } else {
            max_ns
        }
    }

    /// Checks the settings: `multiplier` at least 1 and finite, `jitter` within
    /// `0.0..=1.0`, `initial` at most `max`.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(Error::Config(format!(
                "backoff multiplier must be a finite number >= 1, not {}",
                self.multiplier
            )));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::Config(format!(
                "backoff jitter must be within 0..=1, not {}",
                self.jitter
            )));
        }
        if self.initial > self.max {
            return Err(Error::Config(format!(
                "backoff initial delay {:?} exceeds its max {:?}",
                self.initial, self.max
            )));
        }
        Ok(())
    }
}

/// A service's policy for failed records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recoverability {
    /// Retries of a transient error before the record is given up on. 0 gives up at the
    /// first failure.
    pub retries_max: u32,
    /// The delays between those retries.
    pub backoff: Backoff,
    /// How long a parked (not-yet) record waits before it is tried again. Fixed rather
    /// than growing: what it waits for (a table catching up) usually arrives soon.
    pub park_interval: Duration,
    /// Parks before the record is given up on; with the interval this bounds how long a
    /// key can be held up (60 * 1 s by default).
    pub park_attempts_max: u32,
    /// What giving up means: `true` sends the record to `<service>.dlq`, `false` skips it
    /// with an error log.
    pub dead_letter: bool,
}

impl Default for Recoverability {
    /// 5 retries from 100 ms to 10 s, parks every second for up to a minute, dead letters on.
    fn default() -> Self {
        Self {
            retries_max: 5,
            backoff: Backoff::default(),
            park_interval: Duration::from_secs(1),
            park_attempts_max: 60,
            dead_letter: true,
        }
    }
}

impl Recoverability {
    /// Sets [`retries_max`](Self::retries_max).
    pub fn with_retries_max(mut self, retries_max: u32) -> Self {
        self.retries_max = retries_max;
        self
    }

    /// Sets [`backoff`](Self::backoff).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets [`park_interval`](Self::park_interval).
    pub fn with_park_interval(mut self, park_interval: Duration) -> Self {
        self.park_interval = park_interval;
        self
    }

    /// Sets [`park_attempts_max`](Self::park_attempts_max).
    pub fn with_park_attempts_max(mut self, park_attempts_max: u32) -> Self {
        self.park_attempts_max = park_attempts_max;
        self
    }

    /// Sets [`dead_letter`](Self::dead_letter).
    pub fn with_dead_letter(mut self, dead_letter: bool) -> Self {
        self.dead_letter = dead_letter;
        self
    }

    /// Checks the backoff and that a park waits at all (a zero interval would spin).
    pub fn validate(&self) -> Result<(), Error> {
        self.backoff.validate()?;
        if self.park_interval.is_zero() {
            return Err(Error::Config("park interval must be above zero".into()));
        }
        Ok(())
    }
}

/// What to do with a record whose handler failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try the record again after this delay; its key waits, other keys go on.
    RetryAfter(Duration),
    /// Park the record and its key for this long, then try again; other keys go on.
    Park(Duration),
    /// Give up: publish the record to the service's dead-letter topic with `reason`, then
    /// count it as done.
    DeadLetter {
        /// Why the record was given up on, for the dead letter's headers.
        reason: String,
    },
    /// Give up without a dead letter ([`Recoverability::dead_letter`] is off): log
    /// `reason` and count the record as done.
    Skip {
        /// Why the record was given up on, for the log.
        reason: String,
    },
}

/// Decides what to do after a handler failed with `error`.
///
/// `attempt` is how many times the handler has failed on this record, this failure
/// included (1 after the first failure). A runtime that budgets retries and parks
/// separately passes the count of failures of `error.kind()`.
///
/// - Permanent: give up at once.
/// - Transient: retry after [`Backoff::delay`]`(attempt)` while `attempt <=
///   retries_max`, then give up.
/// - Not yet: park for `park_interval` while `attempt <= park_attempts_max`, then give up.
///
/// Giving up is [`Decision::DeadLetter`], or [`Decision::Skip`] when dead letters are off.
pub fn decide(
    policy: &Recoverability,
    error: &HandlerError,
    attempt: u32,
    rng: &mut impl FnMut() -> u64,
) -> Decision {
    let reason = match error.kind() {
        ErrorKind::Permanent => error.to_string(),
        ErrorKind::Transient if attempt <= policy.retries_max => {
            return Decision::RetryAfter(policy.backoff.delay(attempt, rng));
        }
        ErrorKind::Transient => format!("{error} (after {attempt} attempts)"),
        ErrorKind::NotYet if attempt <= policy.park_attempts_max => {
            return Decision::Park(policy.park_interval);
        }
        ErrorKind::NotYet => format!("{error} (still not ready after {attempt} attempts)"),
    };
    if policy.dead_letter {
        Decision::DeadLetter { reason }
    } else {
        Decision::Skip { reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use proptest::prelude::*;

    fn no_jitter() -> Backoff {
        Backoff {
            jitter: 0.0,
            ..Backoff::default()
        }
    }

    fn zero() -> impl FnMut() -> u64 {
        || 0
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn unjittered_delays_double_up_to_the_cap() {
        let backoff = no_jitter();
        let delays: Vec<Duration> = (1..=9).map(|n| backoff.delay(n, &mut zero())).collect();
        assert_eq!(
            delays,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(6400),
                ms(10_000),
                ms(10_000)
            ]
        );
        assert_eq!(
            backoff.delay(0, &mut zero()),
            ms(100),
            "attempt 0 reads as 1"
        );
        assert_eq!(backoff.delay(u32::MAX, &mut zero()), ms(10_000));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let backoff = Backoff {
            jitter: 1.0,
            ..Backoff::default()
        };
        assert_eq!(backoff.delay(3, &mut zero()), Duration::ZERO);
        assert!(backoff.delay(3, &mut || u64::MAX) <= ms(400));
        assert!(backoff.delay(3, &mut || u64::MAX) > ms(399));
    }

    #[test]
    fn partial_jitter_keeps_the_fixed_part() {
        let backoff = Backoff::default(); // jitter 0.5
        assert_eq!(backoff.delay(1, &mut zero()), ms(50));
        assert_eq!(backoff.delay(1, &mut || 1 << 63), ms(75));
    }

    #[test]
    fn out_of_range_settings_do_not_panic_or_exceed_max() {
        let odd = Backoff {
            initial: Duration::from_secs(100),
            max: ms(5),
            multiplier: f64::NAN,
            jitter: 7.0,
        };
        assert!(odd.validate().is_err());
        let mut rng = SplitMix64::new(3);
        for attempt in 0..100 {
            assert!(odd.delay(attempt, &mut || rng.next_u64()) <= ms(5));
        }
        let shrinking = Backoff {
            multiplier: 0.5,
            jitter: 0.0,
            ..Backoff::default()
        };
        assert_eq!(
            shrinking.delay(5, &mut zero()),
            ms(100),
            "read as multiplier 1"
        );
        let huge = Backoff {
            initial: Duration::MAX,
            max: Duration::MAX,
            multiplier: f64::INFINITY,
            jitter: f64::NAN,
        };
        let _ = huge.delay(u32::MAX, &mut zero());
    }

    #[test]
    fn validate_names_the_bad_setting() {
        assert!(Backoff::default().validate().is_ok());
        let message = |b: Backoff| b.validate().unwrap_err().to_string();
        assert!(
            message(Backoff {
                multiplier: 0.9,
                ..Backoff::default()
            })
            .contains("multiplier")
        );
        assert!(
            message(Backoff {
                jitter: -0.1,
                ..Backoff::default()
            })
            .contains("jitter")
        );
        assert!(
            message(Backoff {
                initial: ms(20_000),
                ..Backoff::default()
            })
            .contains("initial")
        );
        assert!(Recoverability::default().validate().is_ok());
        let no_wait = Recoverability::default().with_park_interval(Duration::ZERO);
        assert!(
            no_wait
                .validate()
                .unwrap_err()
                .to_string()
                .contains("park interval")
        );
    }

    #[test]
    fn default_policy_is_the_documented_one() {
        let policy = Recoverability::default();
        assert_eq!(policy.retries_max, 5);
        assert_eq!(policy.backoff.initial, ms(100));
        assert_eq!(policy.backoff.max, Duration::from_secs(10));
        assert_eq!(policy.park_interval, Duration::from_secs(1));
        assert_eq!(policy.park_attempts_max, 60);
        assert!(policy.dead_letter);
    }

    #[test]
    fn setters_set_one_field_each() {
        let backoff = no_jitter();
        let policy = Recoverability::default()
            .with_retries_max(2)
            .with_backoff(backoff)
            .with_park_interval(ms(250))
            .with_park_attempts_max(4)
            .with_dead_letter(false);
        assert_eq!(
            policy,
            Recoverability {
                retries_max: 2,
                backoff,
                park_interval: ms(250),
                park_attempts_max: 4,
                dead_letter: false,
            }
        );
    }

    #[test]
    fn permanent_dead_letters_at_once() {
        let policy = Recoverability::default();
        let decision = decide(
            &policy,
            &HandlerError::permanent("bad json"),
            1,
            &mut zero(),
        );
        assert_eq!(
            decision,
            Decision::DeadLetter {
                reason: "permanent error: bad json".into()
            }
        );
    }

    #[test]
    fn transient_retries_with_backoff_until_retries_max() {
        let policy = Recoverability::default().with_backoff(no_jitter());
        let error = HandlerError::transient("timeout");
        for attempt in 1..=5 {
            let expected = policy.backoff.delay(attempt, &mut zero());
            assert_eq!(
                decide(&policy, &error, attempt, &mut zero()),
                Decision::RetryAfter(expected)
            );
        }
        assert_eq!(
            decide(&policy, &error, 1, &mut zero()),
            Decision::RetryAfter(ms(100))
        );
        assert_eq!(
            decide(&policy, &error, 6, &mut zero()),
            Decision::DeadLetter {
                reason: "transient error: timeout (after 6 attempts)".into()
            }
        );
    }

    #[test]
    fn zero_retries_gives_up_on_the_first_transient_failure() {
        let policy = Recoverability::default().with_retries_max(0);
        let decision = decide(&policy, &HandlerError::transient("x"), 1, &mut zero());
        assert!(matches!(decision, Decision::DeadLetter { .. }));
    }

    #[test]
    fn not_yet_parks_at_the_interval_until_park_attempts_max() {
        let policy = Recoverability::default().with_park_attempts_max(3);
        let error = HandlerError::not_yet("no customer 7");
        for attempt in 1..=3 {
            assert_eq!(
                decide(&policy, &error, attempt, &mut zero()),
                Decision::Park(Duration::from_secs(1))
            );
        }
        assert_eq!(
            decide(&policy, &error, 4, &mut zero()),
            Decision::DeadLetter {
                reason: "not yet error: no customer 7 (still not ready after 4 attempts)".into()
            }
        );
    }

    #[test]
    fn without_dead_letters_giving_up_is_a_skip() {
        let policy = Recoverability::default()
            .with_dead_letter(false)
            .with_retries_max(0);
        for error in [
            HandlerError::permanent("p"),
            HandlerError::transient("t"),
            HandlerError::not_yet("n"),
        ] {
            let attempt = policy.park_attempts_max + 1;
            let decision = decide(&policy, &error, attempt, &mut zero());
            assert!(
                matches!(decision, Decision::Skip { .. }),
                "{error}: {decision:?}"
            );
        }
    }

    fn valid_backoff() -> impl Strategy<Value = Backoff> {
        (0u64..5_000, 0u64..60_000, 1.0f64..10.0, 0.0f64..=1.0).prop_map(
            |(initial_ms, extra_ms, multiplier, jitter)| Backoff {
                initial: ms(initial_ms),
                max: ms(initial_ms + extra_ms),
                multiplier,
                jitter,
            },
        )
    }

    proptest! {
        #[test]
        fn delays_stay_within_zero_and_max(backoff in valid_backoff(), attempt: u32, draw: u64) {
            let delay = backoff.delay(attempt, &mut || draw);
            prop_assert!(delay <= backoff.max);
        }

        #[test]
        fn unjittered_delays_never_decrease(backoff in valid_backoff(), start in 0u32..200) {
            let backoff = Backoff { jitter: 0.0, ..backoff };
            let mut previous = Duration::ZERO;
            for attempt in start..start + 50 {
                let delay = backoff.delay(attempt, &mut || 0);
                prop_assert!(delay >= previous, "{attempt}: {delay:?} < {previous:?}");
                prop_assert!(delay <= backoff.max);
                previous = delay;
            }
        }

        #[test]
        fn any_settings_stay_within_max(
            initial in any::<u64>(), max in any::<u64>(), multiplier in any::<f64>(),
            jitter in any::<f64>(), attempt: u32, draw: u64,
        ) {
            let backoff = Backoff {
                initial: Duration::from_nanos(initial),
                max: Duration::from_nanos(max),
                multiplier,
                jitter,
            };
            prop_assert!(backoff.delay(attempt, &mut || draw) <= backoff.max);
        }
    }
}
