//! Capped exponential backoff with full jitter, for reconnects.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    /// Attempts made at the base delay before the delay starts to grow.
    flat: u32,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            flat: 0,
            attempt: 0,
        }
    }

    /// Keeps the first `attempts` at the base delay: a hub that restarts is
    /// back within a second or two, and a refused connection costs little,
    /// so nodes find it again within one base delay instead of waiting out
    /// a doubled one.
    pub fn with_flat_start(mut self, attempts: u32) -> Self {
        self.flat = attempts;
        self
    }

    /// The next delay: uniform in [ceiling/2, ceiling], where the ceiling doubles
    /// per attempt up to the cap. Half the ceiling is kept so a crowd of nodes
    /// reconnecting after a hub restart spreads out without reconnecting at once.
    pub fn next_delay(&mut self) -> Duration {
        let growth = self.attempt.saturating_sub(self.flat).min(16);
        let ceiling = self.base.saturating_mul(1 << growth).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(5));
        }
        assert!(b.next_delay() >= Duration::from_millis(2500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn a_flat_start_keeps_the_base_delay_first() {
        let mut b =
            Backoff::new(Duration::from_millis(50), Duration::from_secs(30)).with_flat_start(3);
        for _ in 0..3 {
            assert!(b.next_delay() <= Duration::from_millis(50));
        }
        assert!(
            b.next_delay() <= Duration::from_millis(50),
            "first growth step is the base"
        );
        assert!(b.next_delay() >= Duration::from_millis(50), "then it grows");
    }
}
