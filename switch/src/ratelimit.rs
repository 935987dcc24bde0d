//! How many ICMP and ICMPv6 errors the switch sends per second, all
//! workers together (RFC 4443 2.4 (f) requires a limit; Linux's default,
//! `icmp_msgs_per_sec`, is 1000): a flood of expiring or oversized packets
//! costs at most that many answers.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Errors sent per second at most.
pub const ERRORS_PER_SECOND: u32 = 1000;

/// A budget renewed every second of the switch's clock.
pub struct ErrorBudget {
    second: AtomicU32,
    spent: AtomicU32,
    per_second: u32,
}

impl ErrorBudget {
    pub fn new(per_second: u32) -> ErrorBudget {
        ErrorBudget { second: AtomicU32::new(0), spent: AtomicU32::new(0), per_second }
    }

    /// Whether one more error may be sent in second `now`. Workers racing
    /// over a new second may let a few extra through: a limit, not an account.
    pub fn take(&self, now: u32) -> bool {
        if self.second.swap(now, Relaxed) != now {
            self.spent.store(0, Relaxed);
        }
        self.spent.fetch_add(1, Relaxed) < self.per_second
    }
}

impl Default for ErrorBudget {
    fn default() -> ErrorBudget {
        ErrorBudget::new(ERRORS_PER_SECOND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_runs_out_and_comes_back_next_second() {
        let budget = ErrorBudget::new(3);
        assert_eq!((0..5).filter(|_| budget.take(7)).count(), 3);
        assert!(budget.take(8), "a new second, a new budget");
    }
}
