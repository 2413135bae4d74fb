//! [`LoopbackPort`]: a [`VfPort`] that sends every frame a VF transmits
//! straight back to it on the same pair.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::vhost::{Pair, VfPort, Waker};

/// What a [`LoopbackPort`] has seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopbackStats {
    /// `connected` calls.
    pub connects: usize,
    /// `disconnected` calls.
    pub disconnects: usize,
    /// Every transmitted frame, in order (empty for a chain the backend
    /// could not read).
    pub transmitted: Vec<(Pair, Vec<u8>)>,
    /// Frames waiting for the VF: data pair.
    pub waiting_data: usize,
    /// Frames waiting for the VF: mailbox pair.
    pub waiting_mailbox: usize,
    /// Frames dropped because they did not fit the buffer offered.
    pub dropped: usize,
    /// `receive` calls on the data pair (the backend looking for frames).
    pub polls_data: usize,
    /// `receive` calls on the mailbox pair.
    pub polls_mailbox: usize,
}

#[derive(Debug, Default)]
struct State {
    stats: LoopbackStats,
    waker: Option<Waker>,
    data: VecDeque<Vec<u8>>,
    mailbox: VecDeque<Vec<u8>>,
}

impl State {
    fn queue(&mut self, pair: Pair) -> &mut VecDeque<Vec<u8>> {
        match pair {
            Pair::Data => &mut self.data,
            Pair::Mailbox => &mut self.mailbox,
        }
    }

    fn count(&mut self) {
        self.stats.waiting_data = self.data.len();
        self.stats.waiting_mailbox = self.mailbox.len();
    }
}

/// Loops each transmitted frame back to the VF on the same pair and wakes
/// the backend; counts connections. A new connection starts with nothing
/// waiting, like a reset VF. Frames too large for the buffer offered are
/// dropped and counted.
#[derive(Debug, Default)]
pub struct LoopbackPort {
    state: Mutex<State>,
    changed: Condvar,
}

impl LoopbackPort {
    /// A port with nothing connected.
    pub fn new() -> Arc<Self> {
        Arc::new(LoopbackPort::default())
    }

    /// A copy of what the port has seen.
    pub fn stats(&self) -> LoopbackStats {
        self.lock().stats.clone()
    }

    /// Queues `frame` for the VF on `pair`, as if the device sent it, and
    /// wakes the backend.
    pub fn inject(&self, pair: Pair, frame: &[u8]) {
        self.push(pair, frame, false);
    }

    /// Queues `frame` for the VF (recording it as transmitted if it was),
    /// under one lock, then tells waiters and the backend.
    fn push(&self, pair: Pair, frame: &[u8], transmitted: bool) {
        let waker = {
            let mut state = self.lock();
            if transmitted {
                state.stats.transmitted.push((pair, frame.to_vec()));
            }
            state.queue(pair).push_back(frame.to_vec());
            state.count();
            state.waker.clone()
        };
        self.changed.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Waits until `done(stats)` holds, for at most `timeout`; on timeout
    /// the error names `what` and the last stats seen.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&LoopbackStats) -> bool,
    ) -> Result<LoopbackStats, String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if done(&state.stats) {
                return Ok(state.stats.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}; last seen {:?}",
                    state.stats
                ));
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .expect("loopback lock poisoned: a thread panicked holding it")
                .0;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("loopback lock poisoned: a thread panicked holding it")
    }
}

impl VfPort for LoopbackPort {
    fn connected(&self, waker: Waker) {
        {
            let mut state = self.lock();
            state.stats.connects += 1;
            state.waker = Some(waker);
            state.data.clear();
            state.mailbox.clear();
            state.count();
        }
        self.changed.notify_all();
    }

    fn disconnected(&self) {
        {
            let mut state = self.lock();
            state.stats.disconnects += 1;
            state.waker = None;
        }
        self.changed.notify_all();
    }

    fn transmit(&self, pair: Pair, frame: &[u8]) {
        self.push(pair, frame, true);
    }

    fn receive(&self, pair: Pair, capacity: usize) -> Option<Vec<u8>> {
        let frame = {
            let mut state = self.lock();
            match pair {
                Pair::Data => state.stats.polls_data += 1,
                Pair::Mailbox => state.stats.polls_mailbox += 1,
            }
            let mut found = None;
            while let Some(frame) = state.queue(pair).pop_front() {
                if frame.len() <= capacity {
                    found = Some(frame);
                    break;
                }
                state.stats.dropped += 1;
            }
            state.count();
            found
        };
        self.changed.notify_all();
        frame
    }
}
