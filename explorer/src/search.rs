//! The search over orderings: breadth-first, depth-first or random walks,
//! with a visited set of state fingerprints.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::invariant::{check, Invariant, Kind, Violation};
use crate::world::{Input, Model, NotEnabled, World};

/// How to choose the next ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "strategy")]
pub enum Strategy {
    /// Breadth-first: the first trace found for a kind is a shortest one.
    Bfs,
    /// Depth-first, with the visited set remembering the depth a state was
    /// reached at (a shallower visit explores it again).
    Dfs,
    /// Random walks from the start, each up to the depth bound, choosing
    /// uniformly among the enabled inputs; for depths the exhaustive
    /// searches cannot reach.
    Random {
        /// The seed: the same seed walks the same walks.
        seed: u64,
    },
}

/// How far to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    /// The most inputs in one ordering.
    pub depth: usize,
    /// The most states to expand (random walks: the most inputs applied).
    pub budget: u64,
}

/// The first trace found that breaks an invariant in one way.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What broke (the first violation of this kind in the last state).
    pub violation: Violation,
    /// The inputs from the start, as found.
    pub trace: Vec<Input>,
    /// States expanded when it was found.
    pub after_states: u64,
    /// Time spent when it was found.
    #[serde(serialize_with = "ser_secs")]
    pub after: Duration,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What a search did and found.
#[derive(Debug, Clone, Serialize)]
pub struct Exploration {
    /// What was explored.
    pub model: Model,
    /// How.
    pub strategy: Strategy,
    /// How far.
    pub bounds: Bounds,
    /// States expanded (their successors computed).
    pub states: u64,
    /// Distinct states seen.
    pub distinct: u64,
    /// Inputs applied.
    pub transitions: u64,
    /// Whether every ordering within the depth bound was covered (the
    /// budget was not what stopped the search). Always false for random walks.
    pub complete: bool,
    /// Time spent.
    #[serde(serialize_with = "ser_secs")]
    pub elapsed: Duration,
    /// The first finding of each kind.
    pub findings: BTreeMap<Kind, Finding>,
    /// Every invariant broken at least once.
    pub invariants: BTreeSet<Invariant>,
}

impl Exploration {
    /// States expanded per second.
    pub fn states_per_second(&self) -> f64 {
        self.states as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Tries `input` on a copy of `w`: the successor, or why not.
pub fn successor(model: &Model, w: &World, input: Input) -> Result<World, NotEnabled> {
    let mut next = w.clone();
    next.apply_in(model, input)?;
    Ok(next)
}

struct Recorder {
    started: Instant,
    findings: BTreeMap<Kind, Finding>,
    invariants: BTreeSet<Invariant>,
}

impl Recorder {
    /// Records the violations of a state reached by `trace`; true if any.
    fn record(
        &mut self,
        violations: Vec<Violation>,
        trace: impl FnOnce() -> Vec<Input>,
        states: u64,
    ) -> bool {
        if violations.is_empty() {
            return false;
        }
        let mut trace = Some(trace);
        let mut path = None;
        for v in violations {
            self.invariants.insert(v.invariant);
            if !self.findings.contains_key(&v.kind) {
                let t =
                    path.get_or_insert_with(|| (trace.take().unwrap_or_else(|| unreachable!()))());
                self.findings.insert(
                    v.kind,
                    Finding {
                        violation: v,
                        trace: t.clone(),
                        after_states: states,
                        after: self.started.elapsed(),
                    },
                );
            }
        }
        true
    }
}

/// Explores `model` from its start state.
pub fn explore(model: &Model, strategy: Strategy, bounds: Bounds) -> Result<Exploration, String> {
    let root = World::start(model)?;
    let mut rec = Recorder {
        started: Instant::now(),
        findings: BTreeMap::new(),
        invariants: BTreeSet::new(),
    };
    let (states, distinct, transitions, complete) = match strategy {
        Strategy::Bfs => bfs(model, root, bounds, &mut rec),
        Strategy::Dfs => dfs(model, root, bounds, &mut rec),
        Strategy::Random { seed } => random(model, root, bounds, seed, &mut rec),
    };
    Ok(Exploration {
        model: model.clone(),
        strategy,
        bounds,
        states,
        distinct,
        transitions,
        complete,
        elapsed: rec.started.elapsed(),
        findings: rec.findings,
        invariants: rec.invariants,
    })
}

/// The inputs that lead from the root to node `at`.
fn path(nodes: &[(usize, Option<Input>)], mut at: usize) -> Vec<Input> {
    let mut out = Vec::new();
    while let (parent, Some(input)) = nodes[at] {
        out.push(input);
        at = parent;
    }
    out.reverse();
    out
}

fn bfs(model: &Model, root: World, bounds: Bounds, rec: &mut Recorder) -> (u64, u64, u64, bool) {
    // Each node: its parent and the input that led to it.
    let mut nodes: Vec<(usize, Option<Input>)> = vec![(0, None)];
    let mut seen: HashMap<u64, ()> = HashMap::new();
    seen.insert(root.fingerprint(), ());
    let mut queue: VecDeque<(usize, usize, World)> = VecDeque::new();
    queue.push_back((0, 0, root));
    let (mut states, mut transitions) = (0u64, 0u64);
    while let Some((id, depth, w)) = queue.pop_front() {
        if states >= bounds.budget {
            return (states, seen.len() as u64, transitions, false);
        }
        states += 1;
        if depth >= bounds.depth {
            continue;
        }
        for input in w.candidates(model) {
            let Ok(next) = successor(model, &w, input) else {
                continue;
            };
            transitions += 1;
            if seen.insert(next.fingerprint(), ()).is_some() {
                continue;
            }
            nodes.push((id, Some(input)));
            let child = nodes.len() - 1;
            let broken = rec.record(check(&next, model.vlan_ops), || path(&nodes, child), states);
            if !broken {
                queue.push_back((child, depth + 1, next));
            }
        }
    }
    (states, seen.len() as u64, transitions, true)
}

fn dfs(model: &Model, root: World, bounds: Bounds, rec: &mut Recorder) -> (u64, u64, u64, bool) {
    struct Dfs<'a> {
        model: &'a Model,
        bounds: Bounds,
        seen: HashMap<u64, usize>,
        states: u64,
        transitions: u64,
        complete: bool,
        path: Vec<Input>,
    }
    impl Dfs<'_> {
        fn visit(&mut self, w: &World, rec: &mut Recorder) {
            if self.states >= self.bounds.budget {
                self.complete = false;
                return;
            }
            self.states += 1;
            if self.path.len() >= self.bounds.depth {
                return;
            }
            for input in w.candidates(self.model) {
                let Ok(next) = successor(self.model, w, input) else {
                    continue;
                };
                self.transitions += 1;
                let depth = self.path.len() + 1;
                let fp = next.fingerprint();
                match self.seen.get(&fp) {
                    Some(&d) if d <= depth => continue,
                    _ => {
                        self.seen.insert(fp, depth);
                    }
                }
                self.path.push(input);
                let broken = rec.record(
                    check(&next, self.model.vlan_ops),
                    || self.path.clone(),
                    self.states,
                );
                if !broken {
                    self.visit(&next, rec);
                }
                self.path.pop();
                if self.states >= self.bounds.budget {
                    self.complete = false;
                    return;
                }
            }
        }
    }
    let mut d = Dfs {
        model,
        bounds,
        seen: HashMap::new(),
        states: 0,
        transitions: 0,
        complete: true,
        path: Vec::new(),
    };
    d.seen.insert(root.fingerprint(), 0);
    d.visit(&root, rec);
    (d.states, d.seen.len() as u64, d.transitions, d.complete)
}

fn random(
    model: &Model,
    root: World,
    bounds: Bounds,
    seed: u64,
    rec: &mut Recorder,
) -> (u64, u64, u64, bool) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen: HashMap<u64, ()> = HashMap::new();
    let (mut states, mut transitions) = (0u64, 0u64);
    while transitions < bounds.budget {
        let mut w = root.clone();
        let mut trace = Vec::new();
        while trace.len() < bounds.depth && transitions < bounds.budget {
            states += 1;
            let mut candidates = w.candidates(model);
            rng.shuffle(&mut candidates);
            let Some((input, next)) = candidates
                .into_iter()
                .find_map(|i| successor(model, &w, i).ok().map(|n| (i, n)))
            else {
                break;
            };
            transitions += 1;
            trace.push(input);
            seen.insert(next.fingerprint(), ());
            w = next;
            if rec.record(check(&w, model.vlan_ops), || trace.clone(), states) {
                break;
            }
        }
        if trace.is_empty() {
            break;
        }
    }
    (states, seen.len() as u64, transitions, false)
}
