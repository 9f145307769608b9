//! In-process defences against guessing: a per-IP request rate limit for the sign-in
//! endpoints, windowed failure counters (per IP, and per login for logins that match no
//! account, so that those answer with the same delays as real ones), and the progressive
//! delay they translate into. One replica's view; sharing it across replicas through Redis
//! is a later step.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Requests per minute per IP address.
pub struct IpRateLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl IpRateLimiter {
    /// `per_minute` = 0 disables the limit. The burst is a quarter of a minute's allowance
    /// (at least 5), so a client that spreads its requests never meets the limit.
    pub fn new(per_minute: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|n| {
            let burst = NonZeroU32::new((per_minute / 4).max(5)).unwrap_or(n);
            RateLimiter::keyed(Quota::per_minute(n).allow_burst(burst))
        });
        Self { limiter }
    }

    /// `Err(retry_after)` when `ip` is over its allowance.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        match limiter.check_key(&ip) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// Forgets idle addresses; called periodically so memory stays bounded.
    pub fn prune(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// Most keys a counter keeps; beyond it, expired windows are dropped first and then the
/// oldest windows, so a flood of distinct keys cannot exhaust memory.
const MAX_KEYS: usize = 100_000;

/// Counts events per key within a fixed window that starts at a key's first event.
pub struct WindowCounter<K> {
    window: Duration,
    entries: Mutex<HashMap<K, (u32, Instant)>>,
}

impl<K: Eq + Hash + Clone> WindowCounter<K> {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event for `key`; returns the count in the current window.
    pub fn hit(&self, key: &K) -> u32 {
        self.take(key, 0).unwrap_or(u32::MAX)
    }

    /// Counts one event for `key` unless the current window already holds `limit` (0: no
    /// limit), in one step, so that parallel callers cannot overshoot: the new count, or how
    /// long until the window ends.
    pub fn take(&self, key: &K, limit: u32) -> Result<u32, Duration> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_KEYS && !entries.contains_key(key) {
            let window = self.window;
            entries.retain(|_, (_, start)| now.duration_since(*start) < window);
            if entries.len() >= MAX_KEYS {
                entries.clear();
            }
        }
        let entry = entries.entry(key.clone()).or_insert((0, now));
        if now.duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        if limit > 0 && entry.0 >= limit {
            return Err(self.window.saturating_sub(now.duration_since(entry.1)));
        }
        entry.0 = entry.0.saturating_add(1);
        Ok(entry.0)
    }

    /// Takes back one event counted for `key` (an attempt that turned out right).
    pub fn give_back(&self, key: &K) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get_mut(key) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }

    /// The count in the current window, and how long until the window ends.
    pub fn current(&self, key: &K) -> (u32, Duration) {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some((count, start)) if now.duration_since(*start) < self.window => {
                (*count, self.window - now.duration_since(*start))
            }
            _ => (0, Duration::ZERO),
        }
    }

    pub fn reset(&self, key: &K) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(key);
    }
}

/// The pause before answering a failed sign-in, growing with the failures counted: none
/// for the first two, then 250 ms doubling up to 4 s. It costs an attacker time without
/// costing the server CPU (the wait is a timer, not a thread).
pub fn progressive_delay(failures: u32) -> Duration {
    if failures <= 2 {
        return Duration::ZERO;
    }
    let exp = (failures - 3).min(4);
    Duration::from_millis(250 << exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_stops_at_the_limit_and_give_back_reopens() {
        let c = WindowCounter::new(Duration::from_secs(60));
        for n in 1..=3 {
            assert_eq!(c.take(&"ip", 3), Ok(n));
        }
        assert!(c.take(&"ip", 3).is_err());
        assert_eq!(c.current(&"ip").0, 3);
        c.give_back(&"ip");
        assert_eq!(c.take(&"ip", 3), Ok(3));
        // Without a limit, counting goes on.
        assert_eq!(c.take(&"ip", 0), Ok(4));
    }

    #[test]
    fn delay_grows_then_caps() {
        assert_eq!(progressive_delay(1), Duration::ZERO);
        assert_eq!(progressive_delay(3), Duration::from_millis(250));
        assert_eq!(progressive_delay(4), Duration::from_millis(500));
        assert_eq!(progressive_delay(7), Duration::from_secs(4));
        assert_eq!(progressive_delay(70), Duration::from_secs(4));
    }

    #[test]
    fn window_counter_counts_and_expires() {
        let c = WindowCounter::new(Duration::from_millis(50));
        assert_eq!(c.hit(&"a"), 1);
        assert_eq!(c.hit(&"a"), 2);
        assert_eq!(c.hit(&"b"), 1);
        assert_eq!(c.current(&"a").0, 2);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.current(&"a").0, 0);
        assert_eq!(c.hit(&"a"), 1);
        c.reset(&"a");
        assert_eq!(c.current(&"a").0, 0);
    }

    #[test]
    fn ip_limit_refuses_beyond_the_burst() {
        let limiter = IpRateLimiter::new(20);
        let ip: IpAddr = [192, 0, 2, 1].into();
        let allowed = (0..30).filter(|_| limiter.check(ip).is_ok()).count();
        assert_eq!(allowed, 5);
        assert!(limiter.check(ip).unwrap_err() > Duration::ZERO);
        assert!(limiter.check([192, 0, 2, 2].into()).is_ok());
        assert!(IpRateLimiter::new(0).check(ip).is_ok());
    }
}
