//! A token bucket on the bytes read from a dump's source, like `pv -L`:
//! [`RateLimiter`], with an injectable [`Clock`].

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::Result;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a read rate in bytes per second: `62914560`, `512K`, `60M`,
/// `1G` (binary multiples, so `60M` is 60 MiB/s; a trailing `/s` is
/// allowed). `0` means unlimited.
pub fn parse_rate(s: &str) -> Result<u64> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    crate::units::parse_binary_size(t, "rate")
}

/// Time as the rate limiter sees it: monotonic, and able to wait. The real
/// one is [`SystemClock`]; tests give a fake one that records the sleeps.
pub trait Clock: Send + Sync {
    /// Time elapsed since a fixed origin (never decreasing).
    fn now(&self) -> Duration;
    /// Blocks the calling thread for `duration`.
    fn sleep(&self, duration: Duration);
}

/// The real clock: [`Instant`] and [`thread::sleep`].
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, duration: Duration) {
        thread::sleep(duration);
    }
}

/// The bucket's level, in byte·nanoseconds (bytes × 10⁹), so that refills
/// are exact integers and no fraction of a byte is lost between calls. It
/// goes negative when a request is larger than what the bucket holds: the
/// caller then sleeps until the debt is paid, and a caller arriving
/// meanwhile waits behind it.
#[derive(Debug)]
struct Bucket {
    level: i128,
    at: Duration,
}

/// A token bucket limiting the bytes per second read from a dump's
/// source, shared by every thread that reads (a positional source is read
/// by all the hashing threads).
///
/// The bucket holds at most [`burst`](Self::burst) bytes: one request (a
/// chunk) or a quarter of a second's worth, whichever is larger, so after
/// an idle moment the source is never read faster than that beyond the
/// rate. It starts full. A request larger than what the bucket holds is
/// granted at once and puts the bucket in debt: the caller sleeps until
/// the rate has paid it back, and callers arriving meanwhile sleep longer.
/// The lock is not held while sleeping, so threads sleep concurrently, each
/// until its own turn.
///
/// A rate of 0 is unlimited: [`acquire`](Self::acquire) returns at once.
#[derive(Debug)]
pub struct RateLimiter<C: Clock = SystemClock> {
    rate: u64,
    burst: u64,
    clock: C,
    bucket: Mutex<Bucket>,
}

impl RateLimiter<SystemClock> {
    /// A limiter of `bytes_per_second` (0: unlimited) for requests of up to
    /// `largest_request` bytes, on the real clock.
    pub fn new(bytes_per_second: u64, largest_request: u64) -> Self {
        Self::with_clock(bytes_per_second, largest_request, SystemClock::new())
    }
}

impl<C: Clock> RateLimiter<C> {
    /// A limiter on the given clock.
    pub fn with_clock(bytes_per_second: u64, largest_request: u64, clock: C) -> Self {
        let burst = largest_request.max(bytes_per_second / 4).max(1);
        let at = clock.now();
        RateLimiter {
            rate: bytes_per_second,
            burst,
            clock,
            bucket: Mutex::new(Bucket {
                level: i128::from(burst) * NANOS_PER_SEC as i128,
                at,
            }),
        }
    }

    /// The rate in bytes per second; `None` when unlimited.
    pub fn rate(&self) -> Option<u64> {
        (self.rate > 0).then_some(self.rate)
    }

    /// The most bytes the bucket holds: what may be read at once after a
    /// pause.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Takes `bytes` from the bucket, sleeping first if it does not hold
    /// them. Returns how long it slept (zero when it did not).
    pub fn acquire(&self, bytes: u64) -> Duration {
        if self.rate == 0 || bytes == 0 {
            return Duration::ZERO;
        }
        let wait = {
            let mut b = self
                .bucket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = self.clock.now().max(b.at);
            let elapsed = (now - b.at).as_nanos();
            let full = i128::from(self.burst) * NANOS_PER_SEC as i128;
            // Refill, bounded by the burst (a bucket in debt refills too).
            let refill = elapsed.saturating_mul(u128::from(self.rate));
            b.level = i128::try_from(refill)
                .map_or(full, |r| b.level.saturating_add(r))
                .min(full);
            b.at = now;
            b.level -= i128::from(bytes) * NANOS_PER_SEC as i128;
            if b.level >= 0 {
                Duration::ZERO
            } else {
                // Until the rate has paid the debt back, rounded up to a
                // whole nanosecond.
                let nanos = (-b.level).unsigned_abs().div_ceil(u128::from(self.rate));
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
        };
        if !wait.is_zero() {
            self.clock.sleep(wait);
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A clock that only moves when told to or when slept on, and records
    /// the sleeps.
    #[derive(Default)]
    struct FakeClock {
        state: Mutex<(Duration, Vec<Duration>)>,
    }

    impl FakeClock {
        fn advance(&self, d: Duration) {
            self.state.lock().unwrap().0 += d;
        }
        fn sleeps(&self) -> Vec<Duration> {
            std::mem::take(&mut self.state.lock().unwrap().1)
        }
    }

    impl Clock for Arc<FakeClock> {
        fn now(&self) -> Duration {
            self.state.lock().unwrap().0
        }
        fn sleep(&self, d: Duration) {
            let mut s = self.state.lock().unwrap();
            s.0 += d;
            s.1.push(d);
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn limiter(rate: u64, largest: u64) -> (RateLimiter<Arc<FakeClock>>, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::default());
        (RateLimiter::with_clock(rate, largest, clock.clone()), clock)
    }

    #[test]
    fn steady_reads_sleep_to_the_rate_once_the_burst_is_spent() {
        // 1000 B/s, 100-byte chunks: the burst is a quarter second, 250 B.
        let (l, clock) = limiter(1000, 100);
        assert_eq!(l.burst(), 250);
        assert_eq!(l.rate(), Some(1000));
        let slept: Vec<_> = (0..6).map(|_| l.acquire(100)).collect();
        assert_eq!(
            slept,
            [ms(0), ms(0), ms(50), ms(100), ms(100), ms(100)],
            "250 bytes at once, then 100 bytes every 100 ms"
        );
        assert_eq!(clock.sleeps(), [ms(50), ms(100), ms(100), ms(100)]);
        // 600 bytes in 350 ms of (fake) time: 250 of burst + 350 at the rate.
        assert_eq!(clock.now(), ms(350));
    }

    #[test]
    fn time_spent_elsewhere_counts_and_uneven_requests_are_exact() {
        let (l, clock) = limiter(1000, 100);
        l.acquire(250); // empties the bucket
        clock.advance(ms(30)); // hashing took 30 ms: 30 bytes came back
        assert_eq!(l.acquire(100), ms(70));
        assert_eq!(l.acquire(1), Duration::from_millis(1));
        assert_eq!(l.acquire(33), ms(33));
        // A rate that does not divide a second: 3 B/s, one byte is 333.33 ms,
        // rounded up to the nanosecond, and no fraction is lost over time.
        let (l, _) = limiter(3, 1);
        assert_eq!(l.burst(), 1);
        assert_eq!(l.acquire(1), Duration::ZERO);
        assert_eq!(l.acquire(1), Duration::from_nanos(333_333_334));
        assert_eq!(l.acquire(1), Duration::from_nanos(333_333_333));
        assert_eq!(l.acquire(1), Duration::from_nanos(333_333_333));
    }

    #[test]
    fn an_idle_bucket_holds_no_more_than_the_burst() {
        let (l, clock) = limiter(1000, 100);
        clock.advance(Duration::from_secs(3600));
        // An hour idle earns 250 bytes, not 3.6 MB.
        let slept: Vec<_> = (0..4).map(|_| l.acquire(100)).collect();
        assert_eq!(slept, [ms(0), ms(0), ms(50), ms(100)]);
        // A burst of at least one request, when requests are large.
        let (l, clock) = limiter(1000, 4000);
        assert_eq!(l.burst(), 4000);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(l.acquire(4000), Duration::ZERO);
        assert_eq!(l.acquire(4000), ms(4000));
        // A request above the burst is granted after paying its excess.
        let (l, _) = limiter(1000, 100);
        assert_eq!(l.acquire(1250), ms(1000));
    }

    #[test]
    fn waiting_callers_queue_behind_the_debt() {
        // Threads arriving at the same instant on an empty bucket (sleeps
        // that do not move time): each is told to wait for its own request
        // and those granted before it.
        let clock = Arc::new(FakeClock::default());
        let l2 = RateLimiter::with_clock(1000, 100, NoSleep(clock.clone()));
        l2.acquire(250);
        assert_eq!(l2.acquire(100), ms(100));
        assert_eq!(l2.acquire(100), ms(200));
        assert_eq!(l2.acquire(100), ms(300));
        clock.advance(ms(300));
        assert_eq!(l2.acquire(100), ms(100));
    }

    /// A clock whose sleeps return at once without moving time: as if
    /// several threads had called at the same instant.
    struct NoSleep(Arc<FakeClock>);

    impl Clock for NoSleep {
        fn now(&self) -> Duration {
            self.0.now()
        }
        fn sleep(&self, _: Duration) {}
    }

    #[test]
    fn unlimited_never_sleeps() {
        let (l, clock) = limiter(0, 1 << 20);
        assert_eq!(l.rate(), None);
        for _ in 0..1000 {
            assert_eq!(l.acquire(1 << 20), Duration::ZERO);
        }
        assert_eq!(clock.sleeps(), []);
        assert_eq!(clock.now(), Duration::ZERO);
    }

    #[test]
    fn rates_parse_with_binary_units() {
        assert_eq!(parse_rate("60M").unwrap(), 60 << 20);
        assert_eq!(parse_rate("60M/s").unwrap(), 60 << 20);
        assert_eq!(parse_rate("512k").unwrap(), 512 << 10);
        assert_eq!(parse_rate("1G").unwrap(), 1 << 30);
        assert_eq!(parse_rate("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_rate("0").unwrap(), 0);
        assert_eq!(
            parse_rate("fast").unwrap_err().to_string(),
            "invalid option: rate \"fast\" is not a number"
        );
        assert_eq!(
            parse_rate("60T").unwrap_err().to_string(),
            "invalid option: rate \"60T\": unknown unit \"T\" (use K, M or G, binary multiples)"
        );
    }
}
