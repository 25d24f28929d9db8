//! Capped exponential backoff between reconnection attempts, so an agent
//! whose bridge or hypervisor is down neither hammers it nor waits long
//! once it is back.

use std::time::Duration;

/// The delays between attempts: `initial`, then doubling, never above
/// `max`, back to `initial` after a success.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// The delay the next failure waits.
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// How long to wait after a failure; doubles the wait after it.
    pub fn failed(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// A success: the next failure starts over from `initial`.
    pub fn succeeded(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset_after_a_success() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);

        backoff.succeeded();
        assert_eq!(backoff.failed(), Duration::from_millis(100));
    }
}
