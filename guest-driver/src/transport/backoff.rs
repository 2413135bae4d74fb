//! How a polling driver waits: spin a little, then sleep for growing
//! intervals, so that an idle driver does not eat a vCPU (under TCG a
//! spinning guest thread slows the whole VM down, the device included).
//!
//! [`Backoff::next_pause`] is pure (it says what to do next);
//! [`Backoff::snooze`] does it. Call [`Backoff::reset`] whenever work was
//! found.

use std::time::Duration;

/// The shape of the backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Polls answered with a CPU spin hint before yielding.
    pub spins: u32,
    /// Polls answered with a yield before sleeping.
    pub yields: u32,
    /// The first sleep.
    pub min_sleep: Duration,
    /// The longest sleep; sleeps double up to it.
    pub max_sleep: Duration,
}

impl Default for BackoffPolicy {
    /// 16 spins, 4 yields, then sleeps from 50 µs doubling to 4 ms: a reply
    /// that takes the PF a millisecond is seen within about that much again,
    /// and an idle driver wakes 250 times a second (in the rig's TCG guest
    /// that costs about 5% of a vCPU: 0.16 s of CPU time in 3 s idle).
    fn default() -> Self {
        BackoffPolicy {
            spins: 16,
            yields: 4,
            min_sleep: Duration::from_micros(50),
            max_sleep: Duration::from_millis(4),
        }
    }
}

/// What to do before polling again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Poll again at once, with a spin-loop hint.
    Spin,
    /// Give the CPU to another thread, then poll.
    Yield,
    /// Sleep this long, then poll.
    Sleep(Duration),
}

/// Where a poller is in its backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    idle_polls: u32,
    sleep: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BackoffPolicy::default())
    }
}

impl Backoff {
    /// A backoff that starts at the spinning stage.
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            policy,
            idle_polls: 0,
            sleep: policy.min_sleep,
        }
    }

    /// Work was found: start again from spinning.
    pub fn reset(&mut self) {
        self.idle_polls = 0;
        self.sleep = self.policy.min_sleep;
    }

    /// What to do after one more poll that found nothing.
    #[must_use]
    pub fn next_pause(&mut self) -> Pause {
        let polls = self.idle_polls;
        self.idle_polls = self.idle_polls.saturating_add(1);
        if polls < self.policy.spins {
            return Pause::Spin;
        }
        if polls - self.policy.spins < self.policy.yields {
            return Pause::Yield;
        }
        let sleep = self.sleep;
        self.sleep = (self.sleep * 2).min(self.policy.max_sleep);
        Pause::Sleep(sleep)
    }

    /// Waits as [`next_pause`](Self::next_pause) says.
    pub fn snooze(&mut self) {
        match self.next_pause() {
            Pause::Spin => std::hint::spin_loop(),
            Pause::Yield => std::thread::yield_now(),
            Pause::Sleep(d) => std::thread::sleep(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_then_yields_then_sleeps_doubling_to_the_cap() {
        let mut b = Backoff::new(BackoffPolicy {
            spins: 2,
            yields: 1,
            min_sleep: Duration::from_micros(100),
            max_sleep: Duration::from_micros(300),
        });
        let pauses: Vec<Pause> = (0..7).map(|_| b.next_pause()).collect();
        let us = |n| Pause::Sleep(Duration::from_micros(n));
        assert_eq!(
            pauses,
            [
                Pause::Spin,
                Pause::Spin,
                Pause::Yield,
                us(100),
                us(200),
                us(300),
                us(300)
            ]
        );
        b.reset();
        assert_eq!(b.next_pause(), Pause::Spin);
    }

    #[test]
    fn the_default_sleeps_at_most_four_milliseconds() {
        let mut b = Backoff::default();
        let longest = (0..1000)
            .filter_map(|_| match b.next_pause() {
                Pause::Sleep(d) => Some(d),
                _ => None,
            })
            .max();
        assert_eq!(longest, Some(Duration::from_millis(4)));
    }
}
