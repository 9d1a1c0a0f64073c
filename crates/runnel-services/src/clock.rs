//! Time, behind a trait so that tests can fake it.
//!
//! Retries and parks wait on a [`Clock`]. In production that is [`SystemClock`]; in tests
//! it is [`ManualClock`], whose time moves only when the test calls
//! [`ManualClock::advance`], so "retry after 10 s, park for a minute" runs in microseconds
//! and in a fixed order.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time and of sleeps.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// A future that completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The real clock: wall time, and tokio's timer for sleeps (so `tokio::time::pause()`
/// applies to it too). Sleeping needs a tokio runtime with the timer enabled.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        unix_now_ms()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Wall-clock milliseconds since the Unix epoch; 0 if the system clock reads before it.
/// For timestamps that are facts about the world (`ce_time`, dead-letter times), which
/// virtual time must not change.
pub(crate) fn unix_now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Identifies one sleeper: ordered by deadline, then by arrival, so that sleepers due at
/// the same instant wake in the order they started sleeping.
type SleeperKey = (i128, u64);

/// Virtual time. Clones share one timeline.
///
/// Time is kept in nanoseconds, so several sub-millisecond advances add up exactly, and a
/// sleep never ends early.
#[derive(Clone)]
pub struct ManualClock {
    /// The timeline every clone sees.
    shared: Arc<Mutex<Timeline>>,
}

/// The state behind a [`ManualClock`].
struct Timeline {
    /// Nanoseconds since the Unix epoch; i128 so no advance can overflow it.
    now_ns: i128,
    /// Gives each sleeper a distinct, increasing key.
    sleepers_made: u64,
    /// Pending sleeps by deadline, with the waker of their last poll (`None` before it).
    /// A sleep removes its entry when it completes or is dropped.
    sleepers: BTreeMap<SleeperKey, Option<Waker>>,
}

impl ManualClock {
    /// A clock that reads `start_ms` until advanced.
    pub fn new(start_ms: i64) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Timeline {
                now_ns: i128::from(start_ms) * 1_000_000,
                sleepers_made: 0,
                sleepers: BTreeMap::new(),
            })),
        }
    }

    /// Moves time forward by `duration` and wakes, in deadline order, exactly the
    /// sleepers whose deadline has now been reached.
    pub fn advance(&self, duration: Duration) {
        let due: Vec<Waker> = {
            let mut timeline = self.lock();
            timeline.now_ns += duration.as_nanos() as i128;
            let first_not_due = (timeline.now_ns + 1, 0);
            let not_due = timeline.sleepers.split_off(&first_not_due);
            let due = std::mem::replace(&mut timeline.sleepers, not_due);
            due.into_values().flatten().collect()
        };
        // Wake outside the lock: a waker may run code that reads the clock.
        for waker in due {
            waker.wake();
        }
    }

    /// How many sleeps are pending: started and neither finished nor dropped.
    pub fn sleepers(&self) -> usize {
        self.lock().sleepers.len()
    }

    /// The lock on the timeline. Nothing can be left half-updated by a panic while it is
    /// held, so a poisoned lock is still consistent.
    fn lock(&self) -> MutexGuard<'_, Timeline> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for ManualClock {
    /// A clock at the Unix epoch.
    fn default() -> Self {
        Self::new(0)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let timeline = self.lock();
        f.debug_struct("ManualClock")
            .field("now_ns", &timeline.now_ns)
            .field("sleepers", &timeline.sleepers.len())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        let now_ms = self.lock().now_ns.div_euclid(1_000_000);
        i64::try_from(now_ms).unwrap_or(i64::MAX)
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut timeline = self.lock();
        let deadline_ns = timeline.now_ns + duration.as_nanos() as i128;
        let key = (deadline_ns, timeline.sleepers_made);
        timeline.sleepers_made += 1;
        // Registered now, not at first poll, so that `sleepers()` counts a sleep as soon
        // as it exists and a test can wait for it before advancing.
        if !duration.is_zero() {
            timeline.sleepers.insert(key, None);
        }
        drop(timeline);
        Box::pin(ManualSleep {
            clock: self.clone(),
            key,
        })
    }
}

/// A sleep on a [`ManualClock`].
struct ManualSleep {
    /// The timeline to watch.
    clock: ManualClock,
    /// The deadline and this sleep's entry in the timeline.
    key: SleeperKey,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut timeline = self.clock.lock();
        if timeline.now_ns >= self.key.0 {
            timeline.sleepers.remove(&self.key);
            return Poll::Ready(());
        }
        timeline.sleepers.insert(self.key, Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        self.clock.lock().sleepers.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Wake;

    /// A waker that records which sleeper it belongs to, in wake order.
    struct Recorder {
        name: usize,
        woken: Arc<Mutex<Vec<usize>>>,
    }

    impl Wake for Recorder {
        fn wake(self: Arc<Self>) {
            self.woken.lock().unwrap().push(self.name);
        }
    }

    /// A waker that remembers whether it was woken.
    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn poll(sleep: &mut Pin<Box<dyn Future<Output = ()> + Send>>, waker: &Waker) -> Poll<()> {
        sleep.as_mut().poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn now_moves_only_on_advance() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
        assert_eq!(clock.clone().now_ms(), 1_250, "clones share the timeline");
    }

    #[test]
    fn sub_millisecond_advances_add_up() {
        let clock = ManualClock::new(0);
        for _ in 0..4 {
            clock.advance(Duration::from_micros(250));
        }
        assert_eq!(clock.now_ms(), 1);
    }

    #[test]
    fn a_sleeper_wakes_only_after_enough_advance() {
        let clock = ManualClock::new(0);
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        let mut sleep = clock.sleep(Duration::from_secs(2));
        assert_eq!(clock.sleepers(), 1);
        assert!(poll(&mut sleep, &waker).is_pending());

        clock.advance(Duration::from_millis(1_999));
        assert!(!flag.0.load(Ordering::SeqCst));
        assert!(poll(&mut sleep, &waker).is_pending());

        clock.advance(Duration::from_millis(1));
        assert!(flag.0.load(Ordering::SeqCst));
        assert!(poll(&mut sleep, &waker).is_ready());
        assert_eq!(clock.sleepers(), 0);
    }

    #[test]
    fn sleepers_wake_in_deadline_order_and_only_when_due() {
        let clock = ManualClock::new(0);
        let woken = Arc::new(Mutex::new(Vec::new()));
        let mut sleeps: Vec<_> = [30u64, 10, 20, 10, 50]
            .iter()
            .enumerate()
            .map(|(name, &ms)| {
                let waker = Waker::from(Arc::new(Recorder {
                    name,
                    woken: woken.clone(),
                }));
                let mut sleep = clock.sleep(Duration::from_millis(ms));
                assert!(poll(&mut sleep, &waker).is_pending());
                sleep
            })
            .collect();

        clock.advance(Duration::from_millis(30));
        assert_eq!(
            *woken.lock().unwrap(),
            [1, 3, 2, 0],
            "by deadline, ties by arrival"
        );
        assert_eq!(clock.sleepers(), 1);

        let noop = Waker::noop();
        let ready: Vec<bool> = sleeps
            .iter_mut()
            .map(|s| poll(s, noop).is_ready())
            .collect();
        assert_eq!(ready, [true, true, true, true, false]);
    }

    #[test]
    fn dropping_a_sleep_leaks_nothing() {
        let clock = ManualClock::new(0);
        let polled = {
            let mut sleep = clock.sleep(Duration::from_secs(1));
            assert!(poll(&mut sleep, Waker::noop()).is_pending());
            sleep
        };
        let never_polled = clock.sleep(Duration::from_secs(1));
        assert_eq!(clock.sleepers(), 2);
        drop(polled);
        assert_eq!(clock.sleepers(), 1);
        drop(never_polled);
        assert_eq!(clock.sleepers(), 0);
        clock.advance(Duration::from_secs(5));
    }

    #[test]
    fn a_zero_sleep_is_ready_at_once() {
        let clock = ManualClock::new(0);
        let mut sleep = clock.sleep(Duration::ZERO);
        assert_eq!(clock.sleepers(), 0);
        assert!(poll(&mut sleep, Waker::noop()).is_ready());
    }

    #[tokio::test]
    async fn tasks_sleeping_on_a_manual_clock_resume_after_advance() {
        let clock = ManualClock::new(0);
        let sleeper = clock.clone();
        let task = tokio::spawn(async move {
            sleeper.sleep(Duration::from_secs(60)).await;
            sleeper.now_ms()
        });
        while clock.sleepers() == 0 {
            tokio::task::yield_now().await;
        }
        clock.advance(Duration::from_secs(59));
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        clock.advance(Duration::from_secs(1));
        assert_eq!(task.await.unwrap(), 60_000);
    }

    #[tokio::test(start_paused = true)]
    async fn system_clock_sleeps_on_tokio_time() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let start = tokio::time::Instant::now();
        clock.sleep(Duration::from_secs(30)).await;
        assert!(start.elapsed() >= Duration::from_secs(30));
        assert!(
            clock.now_ms() > 1_600_000_000_000,
            "wall time, not virtual time"
        );
    }
}
