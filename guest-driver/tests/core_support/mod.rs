//! A VF adapter core and the real sans-IO PF (through its engine, for fault
//! injection) in one process, with a fake clock and frames shuttled both ways
//! under the test's control.
//!
//! Nothing moves unless the test says so: [`Pair::send`] runs one watchdog
//! step and hands the request to the PF (the PF answers at once unless a
//! fault holds it; the mailbox is FIFO, so a held request is handled before
//! the next one), [`Pair::deliver`] gives the VF one frame from the PF, and
//! [`Pair::netdev`] is the kernel calling into the driver. [`Pair::settle`]
//! runs everything to rest, moving the clock to the next timer when nothing
//! else can happen. The transport's part, reporting the device back after a
//! reset, is played by the pair: once the VF waits for the device and the PF
//! has finished resetting it.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::debug_span;
use vfrig_device::engine::{Engine, EngineConfig, FaultAction, FaultRule, Trigger};
use vfrig_device::pf::{Pf, PfConfig, VfId, VfPhase, VfPolicy, VfTable};
use vfrig_device::vhost::Pair as QueuePair;
use vfrig_guest_driver::core::{
    Adapter, Config, Event, NetdevEvent, Phase, Refused, Vlan, VlanFsm, VlanState,
};
use virtchnl::{Request, VirtchnlOp, VirtchnlStatus, MAX_FRAME_LEN};

/// The VF under test.
pub const VF: VfId = VfId(0);

/// An adapter and a PF engine with a clock.
pub struct Pair {
    pub now: Instant,
    pub vf: Adapter,
    pub engine: Engine,
    /// Every request the VF sent, in order.
    pub sent: Vec<Request>,
    /// Every event the VF emitted, log lines excepted, in order.
    pub events: Vec<Event>,
    /// Frames from the PF the VF has not been given yet, oldest first.
    inbox: VecDeque<Vec<u8>>,
}

impl Pair {
    /// A fresh pair: the VF has not sent anything yet.
    pub fn new(fsm: VlanFsm) -> Self {
        Pair::with_policy(fsm, VfPolicy::default())
    }

    /// A fresh pair whose PF applies `policy` to the VF.
    pub fn with_policy(fsm: VlanFsm, policy: VfPolicy) -> Self {
        Pair::with_config(Config::with_fsm(fsm), policy, 1)
    }

    /// A fresh pair; `seed` drives the engine's probabilistic faults.
    pub fn with_config(config: Config, policy: VfPolicy, seed: u64) -> Self {
        let pf = PfConfig {
            policies: vec![policy],
            ..PfConfig::default()
        };
        Pair::with_pf(config, pf, seed)
    }

    /// A fresh pair with a PF built from `pf` (its first VF is the one under test).
    pub fn with_pf(config: Config, pf: PfConfig, seed: u64) -> Self {
        let now = Instant::now();
        let mut engine =
            Engine::new(EngineConfig { pf, seed }, now).expect("a PF with one VF and its policy");
        engine.connected(VF);
        Pair {
            now,
            vf: Adapter::new(config),
            engine,
            sent: Vec::new(),
            events: Vec::new(),
            inbox: VecDeque::new(),
        }
    }

    /// Negotiated and settled, netdev down.
    pub fn ready(fsm: VlanFsm) -> Self {
        Pair::ready_with(fsm, VfPolicy::default())
    }

    pub fn ready_with(fsm: VlanFsm, policy: VfPolicy) -> Self {
        let mut p = Pair::with_policy(fsm, policy);
        p.settle();
        assert_eq!(p.vf.phase(), Phase::Down, "{:#?}", p.vf.status());
        p
    }

    /// Negotiated, up, queues enabled, carrier on.
    pub fn running(fsm: VlanFsm) -> Self {
        Pair::running_with(fsm, VfPolicy::default())
    }

    pub fn running_with(fsm: VlanFsm, policy: VfPolicy) -> Self {
        let mut p = Pair::ready_with(fsm, policy);
        p.netdev(NetdevEvent::Up).expect("up");
        p.settle();
        assert_eq!(p.vf.phase(), Phase::Running);
        assert!(p.vf.carrier(), "carrier after up: {:#?}", p.vf.status());
        p
    }

    // ----- steps -------------------------------------------------------------

    /// The kernel changes the netdev.
    pub fn netdev(&mut self, event: NetdevEvent) -> Result<(), Refused> {
        let result = {
            let _vf = debug_span!("vf").entered();
            self.vf.handle_netdev(event)
        };
        self.drain_events();
        result
    }

    /// One watchdog step: the VF's next request, if any, goes to the PF.
    /// Returns its opcode.
    pub fn send(&mut self) -> Option<VirtchnlOp> {
        let tx = {
            let _vf = debug_span!("vf").entered();
            self.vf.poll_transmit(self.now)?
        };
        let frame = tx.to_frame();
        {
            let _pf = debug_span!("pf").entered();
            // The mailbox is a FIFO: what the PF still holds (a delay fault)
            // is handled before anything sent after it.
            let q = self.engine.quiesce();
            if q.held + q.delayed > 0 {
                self.engine.release(self.now, Some(VF));
            }
            self.engine.handle_mailbox(self.now, VF, &frame);
        }
        self.sent.push(tx.request.clone());
        self.fetch();
        self.drain_events();
        Some(tx.op())
    }

    /// The VF gets the oldest frame from the PF. Returns whether there was one.
    pub fn deliver(&mut self) -> bool {
        self.fetch();
        let Some(frame) = self.inbox.pop_front() else {
            return false;
        };
        {
            let _vf = debug_span!("vf").entered();
            self.vf.handle_mailbox(self.now, &frame);
        }
        self.drain_events();
        self.device_check();
        true
    }

    /// Sends and delivers until neither has anything to do; the clock stands still.
    pub fn drive(&mut self) {
        for _ in 0..10_000 {
            self.device_check();
            let sent = self.send().is_some();
            let delivered = self.deliver();
            if !sent && !delivered {
                return;
            }
        }
        panic!("no rest after 10000 steps: {:#?}", self.vf.status());
    }

    /// Moves the clock and fires whatever timers are due.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        {
            let _pf = debug_span!("pf").entered();
            self.engine.handle_timeout(self.now);
        }
        self.fetch();
        {
            let _vf = debug_span!("vf").entered();
            self.vf.handle_timeout(self.now);
        }
        self.drain_events();
    }

    /// Runs to rest: drive, then jump to the next timer, until the VF is
    /// idle in a settled phase and the mailbox is empty both ways.
    pub fn settle(&mut self) {
        for _ in 0..1_000 {
            self.drive();
            if self.is_settled() {
                return;
            }
            let next = [self.vf.poll_timeout(), self.engine.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) => self.advance(at.saturating_duration_since(self.now)),
                None => return,
            }
        }
        panic!("did not settle: {:#?}", self.vf.status());
    }

    pub fn is_settled(&self) -> bool {
        self.inbox.is_empty()
            && self.engine.quiesce().settled
            && self.vf.is_idle()
            && !matches!(self.vf.phase(), Phase::Init | Phase::Resetting)
    }

    /// A host operation on the PF (reset, policy); its events are queued for the VF.
    pub fn admin<R>(&mut self, op: impl FnOnce(&mut Pf) -> R) -> R {
        let result = {
            let _pf = debug_span!("pf").entered();
            self.engine.admin(op)
        };
        self.fetch();
        result
    }

    /// The PF refuses the next `op` from the VF with `status`, without applying it.
    pub fn reject_next(&mut self, op: VirtchnlOp, status: VirtchnlStatus) {
        self.fault(op, FaultAction::Reject { status }, Trigger::Count(1));
    }

    pub fn fault(&mut self, op: VirtchnlOp, action: FaultAction, trigger: Trigger) {
        self.engine.add_fault(FaultRule {
            vf: Some(VF),
            op: Some(op),
            action,
            trigger,
            fired: 0,
        });
    }

    /// Frames waiting for the VF.
    pub fn inbox_len(&mut self) -> usize {
        self.fetch();
        self.inbox.len()
    }

    fn fetch(&mut self) {
        while let Some(frame) = self.engine.receive(VF, QueuePair::Mailbox, MAX_FRAME_LEN) {
            self.inbox.push_back(frame);
        }
        while self.engine.poll_wake().is_some() {}
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.vf.poll_event() {
            if !matches!(event, Event::Log(_)) {
                self.events.push(event);
            }
        }
    }

    /// The transport's part: the VF waits for the device, and the PF is done
    /// resetting it.
    fn device_check(&mut self) {
        let pf_done = self.engine.pf().phase(VF).ok() != Some(VfPhase::Resetting);
        if self.vf.phase() == Phase::Resetting && pf_done {
            let _vf = debug_span!("vf").entered();
            self.vf.handle_device_ready(self.now);
        }
    }

    // ----- views -------------------------------------------------------------

    /// The PF's table for the VF.
    pub fn pf_table(&self) -> VfTable {
        self.engine
            .tables()
            .vf(VF.0)
            .cloned()
            .expect("the VF exists")
    }

    /// The PF's 802.1Q VLAN filters for the VF.
    pub fn pf_vlans(&self) -> Vec<u16> {
        self.pf_table().vlans
    }

    /// The VF's VLAN filters with their states.
    pub fn vf_vlans(&self) -> Vec<(u16, VlanState)> {
        self.vf.vlan_filters().map(|(v, s)| (v.vid, s)).collect()
    }

    /// The VF's ACTIVE VLANs.
    pub fn vf_active(&self) -> Vec<u16> {
        self.vf.active_vlans().iter().map(|v| v.vid).collect()
    }

    /// The kernel's VLANs as the VF recorded them.
    pub fn kernel_vlans(&self) -> Vec<u16> {
        self.vf
            .status()
            .netdev
            .vlans
            .iter()
            .map(|v| v.vid)
            .collect()
    }

    /// A position in [`Pair::sent`], to look at what came after it.
    pub fn mark(&self) -> usize {
        self.sent.len()
    }

    /// VLAN requests sent since `mark`, as `"DEL_VLAN_V2 [10]"`.
    pub fn vlan_requests_since(&self, mark: usize) -> Vec<String> {
        self.sent[mark..]
            .iter()
            .filter_map(|r| {
                let vids: Vec<u16> = match r {
                    Request::AddVlan(l) | Request::DelVlan(l) => l.vids.clone(),
                    Request::AddVlanV2(l) | Request::DelVlanV2(l) => l
                        .filters
                        .iter()
                        .map(|f| f.inner.vid() | f.outer.vid())
                        .collect(),
                    _ => return None,
                };
                Some(format!("{} {vids:?}", r.op()))
            })
            .collect()
    }

    /// Opcodes sent since `mark`.
    pub fn ops_since(&self, mark: usize) -> Vec<VirtchnlOp> {
        self.sent[mark..].iter().map(Request::op).collect()
    }
}

/// An 802.1Q VLAN.
pub fn vlan(vid: u16) -> Vlan {
    Vlan::dot1q(vid)
}
