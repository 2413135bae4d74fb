//! The device engine: the PF model plus everything around it that is still
//! protocol logic rather than I/O: fault injection on the mailbox, the
//! mailbox transcript, per-VF outboxes and the notion of "settled".
//!
//! Sans-IO like [`Pf`]: time comes in as `now`, outputs are polled. The
//! daemon's shell wraps it in a lock, feeds it frames from the virtqueues and
//! the control socket, wakes VF backends named by [`Engine::poll_wake`] and
//! calls [`Engine::handle_timeout`] at [`Engine::poll_timeout`].
//!
//! # Methods, by kind
//!
//! - Inputs: [`Engine::handle_mailbox`], [`Engine::handle_timeout`],
//!   [`Engine::connected`], [`Engine::disconnected`], host operations through
//!   [`Engine::admin`], fault control ([`Engine::add_fault`],
//!   [`Engine::release`], [`Engine::release_refused`],
//!   [`Engine::clear_faults`]).
//! - Outputs: [`Engine::receive`] (the next frame for a VF's receive queue),
//!   [`Engine::poll_wake`], [`Engine::poll_timeout`].
//! - Getters: [`Engine::tables`], [`Engine::transcript`], [`Engine::faults`],
//!   [`Engine::quiesce`], [`Engine::mailbox`].
//!
//! # Invariants
//!
//! - Every request reaches the PF at most once, in the order it is released;
//!   a request no fault applies to reaches it at once.
//! - A VF's receive mailbox gets messages in the order the PF produced them,
//!   except replies a `reorder` fault moved behind the next message.
//! - Mailbox messages are never dropped for lack of buffers: they wait.

mod fault;
mod transcript;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{debug, warn};
use virtchnl::{FrameHeader, PfMessage, Reply, Request, VirtchnlOp, VirtchnlStatus};

pub use fault::{FaultAction, FaultRule, Trigger};
pub use transcript::{summarize, Entry, Outcome};

use crate::pf::{Delivery, DropReason, Effect, Pf, PfConfig, Port, Tables, VfId};
use crate::vhost::Pair;
use crate::Result;

/// Frames waiting for a VF's data receive queue before new ones are dropped.
pub const DATA_BACKLOG: usize = 256;

/// Frames waiting to be written to the uplink before new ones are dropped.
pub const UPLINK_BACKLOG: usize = 4096;

/// Transcript entries kept; older ones are forgotten (and counted) first.
pub const TRANSCRIPT_LIMIT: usize = 65_536;

/// How an engine is built.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The PF.
    pub pf: PfConfig,
    /// Seed for probabilistic fault rules.
    pub seed: u64,
}

/// Whether the mailbox has come to rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quiesce {
    /// Nothing held, delayed, reordered or waiting to be picked up by a VF.
    pub settled: bool,
    /// Requests held until released.
    pub held: usize,
    /// Requests delayed by a timer.
    pub delayed: usize,
    /// Replies a reorder fault is holding back.
    pub reordered: usize,
    /// Mailbox messages queued for VFs that have not picked them up.
    pub undelivered: usize,
}

/// One VF's receive mailbox as the engine sees it: what a VF driver must
/// have read to have heard everything the PF said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MailboxState {
    /// Frames handed to the VF's receive mailbox queue since its frontend
    /// connected (every reply and event, whoever produced it: the PF model,
    /// a `reject` fault or a refused release).
    pub delivered: u64,
    /// Frames queued for the VF that it has not picked up yet.
    pub waiting: usize,
    /// Replies a `reorder` fault holds back until the next message.
    pub reordered: usize,
}

#[derive(Debug)]
struct HeldRequest {
    seq: u64,
    vf: VfId,
    frame: Vec<u8>,
    /// `None`: until released; `Some`: a delay that ends then.
    until: Option<Instant>,
    reorder: bool,
}

#[derive(Debug, Default)]
struct VfQueues {
    connected: bool,
    mailbox: VecDeque<Vec<u8>>,
    data: VecDeque<Vec<u8>>,
    /// Replies held back by a reorder fault, sent after the next mailbox message.
    reordered: VecDeque<Vec<u8>>,
    /// Mailbox frames taken by [`Engine::receive`] since the connection.
    mailbox_delivered: u64,
}

/// The device engine. See the [module docs](self).
#[derive(Debug)]
pub struct Engine {
    pf: Pf,
    start: Instant,
    rng: fastrand::Rng,
    rules: Vec<FaultRule>,
    held: Vec<HeldRequest>,
    vfs: Vec<VfQueues>,
    wake: BTreeSet<VfId>,
    uplink: VecDeque<Vec<u8>>,
    transcript: VecDeque<Entry>,
    /// Sequence number of the first transcript entry (entries before it were
    /// cleared or forgotten).
    transcript_base: u64,
    /// Entries forgotten because the transcript was full.
    transcript_forgotten: u64,
    next_seq: u64,
}

impl Engine {
    /// Builds an engine at time `now` (transcript times are relative to it).
    pub fn new(config: EngineConfig, now: Instant) -> Result<Engine> {
        let pf = Pf::new(config.pf)?;
        let vfs = (0..pf.num_vfs()).map(|_| VfQueues::default()).collect();
        Ok(Engine {
            pf,
            start: now,
            rng: fastrand::Rng::with_seed(config.seed),
            rules: Vec::new(),
            held: Vec::new(),
            vfs,
            wake: BTreeSet::new(),
            uplink: VecDeque::new(),
            transcript: VecDeque::new(),
            transcript_base: 0,
            transcript_forgotten: 0,
            next_seq: 0,
        })
    }

    /// The PF model (read only; change it through [`Engine::admin`]).
    pub fn pf(&self) -> &Pf {
        &self.pf
    }

    /// All PF tables and counters.
    pub fn tables(&self) -> Tables {
        self.pf.tables()
    }

    /// The transcript since the last [`Engine::clear_transcript`], oldest
    /// first; at most [`TRANSCRIPT_LIMIT`] entries.
    pub fn transcript(&self) -> &VecDeque<Entry> {
        &self.transcript
    }

    /// Entries forgotten since the start because the transcript was full.
    pub fn transcript_forgotten(&self) -> u64 {
        self.transcript_forgotten
    }

    /// Forgets the transcript so far.
    pub fn clear_transcript(&mut self) {
        self.transcript_base = self.next_seq;
        self.transcript.clear();
    }

    /// The fault rules, with how often each has fired.
    pub fn faults(&self) -> &[FaultRule] {
        &self.rules
    }

    /// Installs a fault rule after the existing ones.
    pub fn add_fault(&mut self, rule: FaultRule) {
        debug!(?rule, "fault rule installed");
        self.rules.push(rule);
    }

    /// Removes every fault rule (held requests stay held until released).
    pub fn clear_faults(&mut self) {
        self.rules.clear();
    }

    /// Runs a host operation on the PF and queues what it sends to VFs.
    pub fn admin<R>(&mut self, op: impl FnOnce(&mut Pf) -> R) -> R {
        let result = op(&mut self.pf);
        self.drain_pf(None);
        result
    }

    /// A frontend connected for `vf`.
    pub fn connected(&mut self, vf: VfId) {
        if let Some(q) = self.vfs.get_mut(usize::from(vf.0)) {
            q.connected = true;
        }
    }

    /// The frontend for `vf` went away: the VF is reset, its unanswered
    /// requests are discarded and nothing waits for it any more.
    pub fn disconnected(&mut self, now: Instant, vf: VfId) {
        let Some(q) = self.vfs.get_mut(usize::from(vf.0)) else {
            return;
        };
        *q = VfQueues::default();
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.vf == vf);
        self.held = kept;
        for h in gone {
            self.set_outcome(h.seq, Outcome::Discarded, now);
        }
        // A reconnect looks like a VF reset to the PF: nothing of the old
        // connection's configuration survives, and nobody is there to tell.
        if self.pf.reset_vf(vf, false).is_ok() {
            while self.pf.poll_effect().is_some() {}
        }
        self.wake.remove(&vf);
    }

    /// A mailbox frame from `vf` (from its transmit mailbox queue).
    pub fn handle_mailbox(&mut self, now: Instant, vf: VfId, frame: &[u8]) {
        if usize::from(vf.0) >= self.vfs.len() {
            self.pf.handle_mailbox(now, vf, frame);
            return;
        }
        let header = FrameHeader::parse(frame).ok();
        let (op, cookie) = header.map_or((VirtchnlOp::Unspecified, 0), |h| (h.op, h.cookie));
        let summary = match Request::from_frame(frame) {
            Ok((_, req)) => summarize(&req),
            Err(err) => format!("malformed: {err}"),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let action = header.and_then(|_| self.fire(vf, op));
        if self.transcript.len() == TRANSCRIPT_LIMIT {
            self.transcript.pop_front();
            self.transcript_base += 1;
            self.transcript_forgotten += 1;
        }
        self.transcript.push_back(Entry {
            seq,
            vf,
            op: op.to_string(),
            cookie,
            summary,
            outcome: Outcome::Pending,
            fault: action.map(|a| fault_name(&a)),
            at_us: self.micros(now),
            replied_at_us: None,
        });
        match action {
            None => self.process(now, seq, vf, frame, false),
            Some(FaultAction::Reorder) => self.process(now, seq, vf, frame, true),
            Some(FaultAction::Reject { status }) => self.refuse(now, seq, vf, frame, status),
            Some(FaultAction::Drop) => self.set_outcome(seq, Outcome::Dropped, now),
            Some(FaultAction::Delay { delay_ms }) => self.held.push(HeldRequest {
                seq,
                vf,
                frame: frame.to_vec(),
                until: Some(now + Duration::from_millis(delay_ms)),
                reorder: false,
            }),
            Some(FaultAction::Hold) => self.held.push(HeldRequest {
                seq,
                vf,
                frame: frame.to_vec(),
                until: None,
                reorder: false,
            }),
        }
    }

    /// A data frame from `vf`'s transmit queue: the PF switch forwards it.
    pub fn handle_data(&mut self, _now: Instant, vf: VfId, frame: &[u8]) {
        match self.pf.switch_from_vf(vf, frame) {
            Ok(deliveries) => self.deliver(deliveries),
            Err(err) => warn!(%err, "data frame from a VF that does not exist"),
        }
    }

    /// A frame arriving from the wire: the PF switch forwards it to VFs.
    pub fn handle_uplink(&mut self, _now: Instant, frame: &[u8]) {
        let deliveries = self.pf.switch_from_uplink(frame);
        self.deliver(deliveries);
    }

    /// The next frame the PF switch sent to the uplink.
    #[must_use]
    pub fn poll_uplink(&mut self) -> Option<Vec<u8>> {
        self.uplink.pop_front()
    }

    fn deliver(&mut self, deliveries: Vec<Delivery>) {
        for Delivery { to, frame } in deliveries {
            match to {
                Port::Vf(vf) => {
                    let queued = self.vfs.get_mut(usize::from(vf.0)).and_then(|q| {
                        (q.connected && q.data.len() < DATA_BACKLOG)
                            .then(|| q.data.push_back(frame))
                    });
                    if queued.is_some() {
                        self.wake.insert(vf);
                    } else {
                        // Not connected, or the VF has not picked up its backlog.
                        let _ = self.pf.count_drop(vf, DropReason::NoRxBuffer);
                    }
                }
                Port::Uplink => {
                    if self.uplink.len() < UPLINK_BACKLOG {
                        self.uplink.push_back(frame);
                    } else {
                        warn!("uplink backlog full; frame dropped");
                    }
                }
            }
        }
    }

    /// Handles requests whose delay has ended by `now`, in order of their deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        loop {
            let due = self
                .held
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.until.filter(|t| *t <= now).map(|t| (t, h.seq, i)))
                .min();
            let Some((_, _, index)) = due else { break };
            let h = self.held.remove(index);
            self.process(now, h.seq, h.vf, &h.frame, h.reorder);
        }
    }

    /// When [`Engine::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held.iter().filter_map(|h| h.until).min()
    }

    /// Releases held and delayed requests of `vf` (all VFs with `None`) in
    /// arrival order, and sends replies a reorder fault held back. Returns how
    /// many requests were released.
    pub fn release(&mut self, now: Instant, vf: Option<VfId>) -> usize {
        self.release_with(now, vf, None)
    }

    /// Like [`Engine::release`], but every held or delayed request of `vf`
    /// (all VFs with `None`) is refused instead of handled: it gets the reply
    /// a [`FaultAction::Reject`] with `status` gives (an empty reply with that
    /// status, the transcript's outcome `Replied(status)`), and the PF model
    /// never sees it. Returns how many requests were refused.
    pub fn release_refused(
        &mut self,
        now: Instant,
        vf: Option<VfId>,
        status: VirtchnlStatus,
    ) -> usize {
        self.release_with(now, vf, Some(status))
    }

    fn release_with(
        &mut self,
        now: Instant,
        vf: Option<VfId>,
        refuse: Option<VirtchnlStatus>,
    ) -> usize {
        let (out, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| vf.is_none_or(|v| v == h.vf));
        self.held = kept;
        let released = out.len();
        for h in out {
            match refuse {
                None => self.process(now, h.seq, h.vf, &h.frame, h.reorder),
                Some(status) => self.refuse(now, h.seq, h.vf, &h.frame, status),
            }
        }
        for (i, q) in self.vfs.iter_mut().enumerate() {
            let id = VfId(u16::try_from(i).unwrap_or(u16::MAX));
            if vf.is_none_or(|v| v == id) && !q.reordered.is_empty() {
                q.mailbox.extend(q.reordered.drain(..));
                self.wake.insert(id);
            }
        }
        released
    }

    /// Answers a request with an empty reply with `status`, without the PF
    /// seeing it: a `reject` fault, or a held request released as refused.
    fn refuse(&mut self, now: Instant, seq: u64, vf: VfId, frame: &[u8], status: VirtchnlStatus) {
        // Faults only fire for frames with a header (see `handle_mailbox`).
        let (op, cookie) =
            FrameHeader::parse(frame).map_or((VirtchnlOp::Unspecified, 0), |h| (h.op, h.cookie));
        debug!(%vf, %op, %status, "request refused");
        let reply = PfMessage::Reply(Reply::empty(op, status)).to_frame(cookie);
        self.set_outcome(seq, Outcome::Replied(status.to_string()), now);
        self.push_mailbox(vf, reply);
    }

    /// Takes the next frame for `vf`'s receive queue of `pair` that fits in
    /// `capacity` bytes. A frame that can never fit is dropped with a warning.
    pub fn receive(&mut self, vf: VfId, pair: Pair, capacity: usize) -> Option<Vec<u8>> {
        let q = self.vfs.get_mut(usize::from(vf.0))?;
        let queue = match pair {
            Pair::Mailbox => &mut q.mailbox,
            Pair::Data => &mut q.data,
        };
        while let Some(frame) = queue.pop_front() {
            if frame.len() <= capacity {
                if pair == Pair::Mailbox {
                    q.mailbox_delivered += 1;
                }
                return Some(frame);
            }
            warn!(%vf, ?pair, len = frame.len(), capacity, "receive buffer too small; frame dropped");
        }
        None
    }

    /// The next VF that has new frames waiting; wake its backend.
    #[must_use]
    pub fn poll_wake(&mut self) -> Option<VfId> {
        self.wake.pop_first()
    }

    /// Whether the mailbox has come to rest.
    pub fn quiesce(&self) -> Quiesce {
        let delayed = self.held.iter().filter(|h| h.until.is_some()).count();
        let held = self.held.len() - delayed;
        let reordered = self.vfs.iter().map(|q| q.reordered.len()).sum();
        let undelivered = self.vfs.iter().map(|q| q.mailbox.len()).sum();
        Quiesce {
            settled: held + delayed + reordered + undelivered == 0,
            held,
            delayed,
            reordered,
            undelivered,
        }
    }

    /// `vf`'s receive mailbox: frames delivered since its frontend connected
    /// and frames still waiting. `None` for a VF the PF does not have.
    ///
    /// A VF driver that has read `delivered` frames, while nothing is
    /// `waiting`, has heard every message the PF sent it so far, replies
    /// and events alike. (The PF model's mailbox counters are no substitute:
    /// they miss the replies of `reject` faults and refused releases, and
    /// count messages a disconnect discarded.)
    pub fn mailbox(&self, vf: VfId) -> Option<MailboxState> {
        let q = self.vfs.get(usize::from(vf.0))?;
        Some(MailboxState {
            delivered: q.mailbox_delivered,
            waiting: q.mailbox.len(),
            reordered: q.reordered.len(),
        })
    }

    /// Picks the fault action for a request, if a rule fires.
    fn fire(&mut self, vf: VfId, op: VirtchnlOp) -> Option<FaultAction> {
        let rng = &mut self.rng;
        let rule = self.rules.iter_mut().find(|r| {
            if !r.matches(vf, op) || r.spent() {
                return false;
            }
            match r.trigger {
                Trigger::Count(_) => true,
                Trigger::Probability(p) => rng.f64() < p,
            }
        })?;
        rule.fired += 1;
        debug!(%vf, %op, action = ?rule.action, "fault fired");
        Some(rule.action)
    }

    /// Hands a request to the PF and routes what comes back.
    fn process(&mut self, now: Instant, seq: u64, vf: VfId, frame: &[u8], reorder: bool) {
        self.pf.handle_mailbox(now, vf, frame);
        self.drain_pf(Some((seq, vf, reorder, now)));
    }

    /// Moves the PF's effects into the VFs' mailboxes. `request` names the
    /// request just handed to the PF: its reply (the first reply to that VF)
    /// completes the transcript entry.
    fn drain_pf(&mut self, request: Option<(u64, VfId, bool, Instant)>) {
        let mut answered = false;
        while let Some(effect) = self.pf.poll_effect() {
            let target = effect.vf();
            let frame = effect.to_frame();
            if let (Some((seq, vf, reorder, now)), Effect::Reply { reply, .. }) = (request, &effect)
            {
                if target == vf && !answered {
                    answered = true;
                    self.set_outcome(seq, Outcome::Replied(reply.status.to_string()), now);
                    if reorder {
                        if let Some(q) = self.vfs.get_mut(usize::from(vf.0)) {
                            q.reordered.push_back(frame);
                        }
                        continue;
                    }
                }
            }
            self.push_mailbox(target, frame);
        }
        if let Some((seq, _, _, now)) = request {
            if !answered {
                self.set_outcome(seq, Outcome::NoReply, now);
            }
        }
    }

    fn push_mailbox(&mut self, vf: VfId, frame: Vec<u8>) {
        let Some(q) = self.vfs.get_mut(usize::from(vf.0)) else {
            return;
        };
        q.mailbox.push_back(frame);
        // A reordered reply goes right after the next message.
        q.mailbox.extend(q.reordered.drain(..));
        self.wake.insert(vf);
    }

    fn set_outcome(&mut self, seq: u64, outcome: Outcome, now: Instant) {
        let at = self.micros(now);
        let Some(index) = seq.checked_sub(self.transcript_base) else {
            return;
        };
        if let Some(entry) = usize::try_from(index)
            .ok()
            .and_then(|i| self.transcript.get_mut(i))
        {
            if matches!(outcome, Outcome::Replied(_)) {
                entry.replied_at_us = Some(at);
            }
            entry.outcome = outcome;
        }
    }

    fn micros(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
    }
}

fn fault_name(action: &FaultAction) -> String {
    match action {
        FaultAction::Reject { status } => format!("reject {status}"),
        FaultAction::Drop => "drop".to_owned(),
        FaultAction::Delay { delay_ms } => format!("delay {delay_ms} ms"),
        FaultAction::Hold => "hold".to_owned(),
        FaultAction::Reorder => "reorder".to_owned(),
    }
}
