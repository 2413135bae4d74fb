//! The control protocol: newline-delimited JSON, one request, one reply.
//!
//! A request is an object whose `"cmd"` names the command. A reply is
//! `{"ok": VALUE}` or `{"error": "what was wrong"}`; a line that is not JSON
//! gets an error too and the connection stays usable. This module turns one
//! line into one reply against an [`Engine`]; the socket around it is the
//! daemon's.
//!
//! | command | fields | `ok` value |
//! |---|---|---|
//! | `tables` | | all PF tables and counters |
//! | `transcript` | | the mailbox transcript since the last `clear` |
//! | `policy` | `vf`, optional `set` (any of the policy keys) | the VF's policy after the change |
//! | `fault` | `vf`?, `op`?, `action` (`reject`, `drop`, `delay`, `hold`, `reorder`), `status`?, `delay_ms`?, `count`? (default 1) or `probability`? | `{"rule": index}` |
//! | `faults` | | the installed rules with their `fired` counts |
//! | `release` | `vf`? (all VFs when absent), `status`? (a virtchnl status name: refuse instead of handle) | `{"released": n}` |
//! | `clear` | `what`? (`transcript`, `faults`; both when absent) | `null` |
//! | `event` | `vf`, `kind` (`link_down`, `link_up`, `link_auto`, `reset`) | `null` |
//! | `pf_link` | `up` | `null` |
//! | `quiesce` | | `{"settled": bool, "held": n, "delayed": n, "reordered": n, "undelivered": n}` |
//! | `mailbox` | `vf` | `{"delivered": n, "waiting": n, "reordered": n}`: frames the VF took from its receive mailbox since it connected, frames queued for it, replies a reorder holds back |
//!
//! `release` without `status` hands every held and delayed request to the
//! PF, as if no fault had applied. With `status` (`"ERR_PARAM"`), each one
//! is refused instead: it gets the reply a `reject` fault with that status
//! gives, and the PF model never sees it.

use std::time::Instant;

use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use virtchnl::{MacAddr, VirtchnlOp, VirtchnlStatus};

use crate::engine::{Engine, FaultAction, FaultRule, Trigger};
use crate::pf::{LinkState, VfId, VfPolicy};

// Commands without fields are empty struct variants: serde lets unit
// variants of an internally tagged enum ignore unknown keys.
#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    Tables {},
    Transcript {},
    Policy {
        vf: u16,
        #[serde(default)]
        set: Option<PolicyPatch>,
    },
    Fault(FaultSpec),
    Faults {},
    Release {
        #[serde(default)]
        vf: Option<u16>,
        #[serde(default)]
        status: Option<String>,
    },
    Clear {
        #[serde(default)]
        what: Option<ClearWhat>,
    },
    Event {
        vf: u16,
        kind: EventKind,
    },
    PfLink {
        up: bool,
    },
    Quiesce {},
    Mailbox {
        vf: u16,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ClearWhat {
    Transcript,
    Faults,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EventKind {
    LinkDown,
    LinkUp,
    LinkAuto,
    Reset,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ActionName {
    Reject,
    Drop,
    Delay,
    Hold,
    Reorder,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    #[serde(default)]
    vf: Option<u16>,
    #[serde(default)]
    op: Option<String>,
    action: ActionName,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    probability: Option<f64>,
}

/// A partial [`VfPolicy`]: keys left out keep their value; `"admin_mac": null`
/// and `"port_vlan": null` remove them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyPatch {
    trust: Option<bool>,
    spoofchk: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    admin_mac: Option<Option<MacAddr>>,
    #[serde(default, deserialize_with = "present")]
    port_vlan: Option<Option<u16>>,
    max_macs: Option<u16>,
    max_vlans: Option<u16>,
    vlan_v2: Option<bool>,
    link: Option<LinkState>,
}

/// Tells a key given as `null` (`Some(None)`) from a key left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl PolicyPatch {
    fn apply(self, mut p: VfPolicy) -> VfPolicy {
        p.trust = self.trust.unwrap_or(p.trust);
        p.spoofchk = self.spoofchk.unwrap_or(p.spoofchk);
        p.admin_mac = self.admin_mac.unwrap_or(p.admin_mac);
        p.port_vlan = self.port_vlan.unwrap_or(p.port_vlan);
        p.max_macs = self.max_macs.unwrap_or(p.max_macs);
        p.max_vlans = self.max_vlans.unwrap_or(p.max_vlans);
        p.vlan_v2 = self.vlan_v2.unwrap_or(p.vlan_v2);
        p.link = self.link.unwrap_or(p.link);
        p
    }
}

impl FaultSpec {
    fn into_rule(self) -> Result<FaultRule, String> {
        let op = match self.op.as_deref() {
            None | Some("any") | Some("ANY") => None,
            Some(name) => Some(name.parse::<VirtchnlOp>().map_err(|e| e.to_string())?),
        };
        if self.status.is_some() && !matches!(self.action, ActionName::Reject) {
            return Err("`status` only goes with action `reject`".to_owned());
        }
        if self.delay_ms.is_some() && !matches!(self.action, ActionName::Delay) {
            return Err("`delay_ms` only goes with action `delay`".to_owned());
        }
        let action = match self.action {
            ActionName::Reject => {
                let status = match self.status.as_deref() {
                    None => VirtchnlStatus::ErrParam,
                    Some(name) => name.parse().map_err(|e: virtchnl::Error| e.to_string())?,
                };
                FaultAction::Reject { status }
            }
            ActionName::Drop => FaultAction::Drop,
            ActionName::Delay => FaultAction::Delay {
                delay_ms: self.delay_ms.ok_or("action `delay` needs `delay_ms`")?,
            },
            ActionName::Hold => FaultAction::Hold,
            ActionName::Reorder => FaultAction::Reorder,
        };
        let trigger = match (self.count, self.probability) {
            (Some(_), Some(_)) => return Err("give `count` or `probability`, not both".to_owned()),
            (_, Some(p)) if !(0.0..=1.0).contains(&p) => {
                return Err(format!("`probability` must be within 0..=1, got {p}"))
            }
            (_, Some(p)) => Trigger::Probability(p),
            (Some(0), None) => return Err("`count` must be at least 1".to_owned()),
            (count, None) => Trigger::Count(count.unwrap_or(1)),
        };
        Ok(FaultRule {
            vf: self.vf.map(VfId),
            op,
            action,
            trigger,
            fired: 0,
        })
    }
}

/// Handles one request line at `now` and returns the reply line (without newline).
pub fn handle_line(engine: &mut Engine, now: Instant, line: &str) -> String {
    let reply = match serde_json::from_str::<Command>(line) {
        Ok(command) => match execute(engine, now, command) {
            Ok(value) => json!({ "ok": value }),
            Err(error) => json!({ "error": error }),
        },
        Err(err) => json!({ "error": format!("bad request: {err}") }),
    };
    reply.to_string()
}

fn to_value<T: serde::Serialize + ?Sized>(value: &T) -> Result<Value, String> {
    serde_json::to_value(value).map_err(|e| format!("could not encode the reply: {e}"))
}

fn execute(engine: &mut Engine, now: Instant, command: Command) -> Result<Value, String> {
    let check_vf = |engine: &Engine, vf: u16| {
        engine
            .pf()
            .policy(VfId(vf))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    match command {
        Command::Tables {} => to_value(&engine.tables()),
        Command::Transcript {} => to_value(engine.transcript()),
        Command::Policy { vf, set } => {
            let current = engine
                .pf()
                .policy(VfId(vf))
                .map_err(|e| e.to_string())?
                .clone();
            if let Some(patch) = set {
                let policy = patch.apply(current);
                engine
                    .admin(|pf| pf.set_policy(VfId(vf), policy))
                    .map_err(|e| e.to_string())?;
            }
            to_value(engine.pf().policy(VfId(vf)).map_err(|e| e.to_string())?)
        }
        Command::Fault(spec) => {
            if let Some(vf) = spec.vf {
                check_vf(engine, vf)?;
            }
            let rule = spec.into_rule()?;
            engine.add_fault(rule);
            Ok(json!({ "rule": engine.faults().len() - 1 }))
        }
        Command::Faults {} => to_value(engine.faults()),
        Command::Release { vf, status } => {
            if let Some(vf) = vf {
                check_vf(engine, vf)?;
            }
            let released = match status.as_deref() {
                None => engine.release(now, vf.map(VfId)),
                Some(name) => {
                    let status: VirtchnlStatus = name
                        .parse()
                        .map_err(|e: virtchnl::Error| format!("release status: {e}"))?;
                    engine.release_refused(now, vf.map(VfId), status)
                }
            };
            Ok(json!({ "released": released }))
        }
        Command::Clear { what } => {
            if !matches!(what, Some(ClearWhat::Faults)) {
                engine.clear_transcript();
            }
            if !matches!(what, Some(ClearWhat::Transcript)) {
                engine.clear_faults();
            }
            Ok(Value::Null)
        }
        Command::Event { vf, kind } => {
            let vf = VfId(vf);
            let result = engine.admin(|pf| match kind {
                EventKind::LinkDown => pf.set_link_state(vf, LinkState::Disable),
                EventKind::LinkUp => pf.set_link_state(vf, LinkState::Enable),
                EventKind::LinkAuto => pf.set_link_state(vf, LinkState::Auto),
                EventKind::Reset => pf.reset_vf(vf, true),
            });
            result.map(|()| Value::Null).map_err(|e| e.to_string())
        }
        Command::PfLink { up } => {
            engine.admin(|pf| pf.set_pf_link(up));
            Ok(Value::Null)
        }
        Command::Quiesce {} => to_value(&engine.quiesce()),
        Command::Mailbox { vf } => {
            check_vf(engine, vf)?;
            let state = engine
                .mailbox(VfId(vf))
                .ok_or_else(|| format!("vf{vf} has no mailbox queues"))?;
            to_value(&state)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::Value;
    use virtchnl::{PfMessage, Request, VersionInfo, VirtchnlOp, VirtchnlStatus};

    use super::handle_line;
    use crate::engine::{Engine, EngineConfig};
    use crate::pf::{PfConfig, VfId};
    use crate::vhost::Pair;

    fn engine() -> Engine {
        let config = EngineConfig {
            pf: PfConfig {
                num_vfs: 2,
                ..PfConfig::default()
            },
            seed: 1,
        };
        Engine::new(config, Instant::now()).expect("valid config")
    }

    /// Sends `line`, returns the parsed reply.
    fn call(engine: &mut Engine, line: &str) -> Value {
        let reply = handle_line(engine, Instant::now(), line);
        assert!(!reply.contains('\n'), "one reply, one line: {reply}");
        serde_json::from_str(&reply).expect("replies are JSON")
    }

    fn ok(engine: &mut Engine, line: &str) -> Value {
        let reply = call(engine, line);
        assert!(reply.get("error").is_none(), "{line} -> {reply}");
        reply["ok"].clone()
    }

    fn error(engine: &mut Engine, line: &str) -> String {
        let reply = call(engine, line);
        reply["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{line} should fail: {reply}"))
            .to_owned()
    }

    #[test]
    fn a_line_that_is_not_json_gets_an_error_and_the_next_line_still_works() {
        let mut e = engine();
        assert!(error(&mut e, "tables please").starts_with("bad request"));
        assert!(ok(&mut e, r#"{"cmd":"tables"}"#)["vfs"]["vf1"].is_object());
    }

    #[test]
    fn unknown_commands_and_fields_are_named_in_the_error() {
        let mut e = engine();
        assert!(error(&mut e, r#"{"cmd":"tabels"}"#).contains("tabels"));
        assert!(error(&mut e, r#"{"cmd":"quiesce","now":1}"#).contains("now"));
        assert!(error(&mut e, r#"{"cmd":"policy"}"#).contains("vf"));
    }

    #[test]
    fn policy_reads_and_patches_like_ip_link_set_vf() {
        let mut e = engine();
        assert_eq!(ok(&mut e, r#"{"cmd":"policy","vf":1}"#)["trust"], false);
        let p = ok(
            &mut e,
            r#"{"cmd":"policy","vf":1,"set":{"trust":true,"admin_mac":"02:00:00:00:00:42"}}"#,
        );
        assert_eq!(
            (p["trust"].clone(), p["admin_mac"].clone()),
            (true.into(), "02:00:00:00:00:42".into())
        );
        let p = ok(
            &mut e,
            r#"{"cmd":"policy","vf":1,"set":{"admin_mac":null}}"#,
        );
        assert!(p["admin_mac"].is_null() && p["trust"] == true);
        assert!(error(
            &mut e,
            r#"{"cmd":"policy","vf":1,"set":{"port_vlan":5000}}"#
        )
        .contains("port VLAN 5000 is out of range"));
        assert!(error(&mut e, r#"{"cmd":"policy","vf":9}"#).contains("vf9 does not exist"));
        assert!(
            error(&mut e, r#"{"cmd":"policy","vf":0,"set":{"trusted":true}}"#).contains("trusted")
        );
    }

    #[test]
    fn fault_rules_are_validated_listed_and_cleared() {
        let mut e = engine();
        let r = ok(
            &mut e,
            r#"{"cmd":"fault","vf":0,"op":"DEL_VLAN","action":"reject","status":"ERR_NOT_SUPPORTED","count":2}"#,
        );
        assert_eq!(r["rule"], 0);
        ok(
            &mut e,
            r#"{"cmd":"fault","action":"drop","probability":0.25}"#,
        );
        let rules = ok(&mut e, r#"{"cmd":"faults"}"#);
        assert_eq!(rules[0]["op"], "DEL_VLAN");
        assert_eq!(rules[0]["status"], "ERR_NOT_SUPPORTED");
        assert_eq!(rules[1]["trigger"]["probability"], 0.25);
        for (line, says) in [
            (
                r#"{"cmd":"fault","op":"DEL_VLANS","action":"drop"}"#,
                "DEL_VLANS",
            ),
            (r#"{"cmd":"fault","action":"delay"}"#, "delay_ms"),
            (
                r#"{"cmd":"fault","action":"drop","status":"ERR_PARAM"}"#,
                "status",
            ),
            (
                r#"{"cmd":"fault","action":"drop","count":1,"probability":0.5}"#,
                "not both",
            ),
            (
                r#"{"cmd":"fault","action":"drop","probability":2}"#,
                "0..=1",
            ),
            (r#"{"cmd":"fault","action":"hold","vf":7}"#, "vf7"),
            (r#"{"cmd":"fault","action":"explode"}"#, "explode"),
        ] {
            assert!(error(&mut e, line).contains(says), "{line}");
        }
        ok(&mut e, r#"{"cmd":"clear","what":"faults"}"#);
        assert_eq!(ok(&mut e, r#"{"cmd":"faults"}"#), Value::Array(vec![]));
    }

    #[test]
    fn events_release_and_quiesce() {
        let mut e = engine();
        ok(&mut e, r#"{"cmd":"event","vf":0,"kind":"reset"}"#);
        assert_eq!(
            ok(&mut e, r#"{"cmd":"quiesce"}"#)["undelivered"],
            1,
            "RESET_IMPENDING waits"
        );
        assert!(e
            .receive(VfId(0), crate::vhost::Pair::Mailbox, 4096)
            .is_some());
        assert_eq!(ok(&mut e, r#"{"cmd":"quiesce"}"#)["settled"], true);
        ok(&mut e, r#"{"cmd":"event","vf":1,"kind":"link_down"}"#);
        assert_eq!(ok(&mut e, r#"{"cmd":"policy","vf":1}"#)["link"], "disable");
        ok(&mut e, r#"{"cmd":"pf_link","up":false}"#);
        assert_eq!(ok(&mut e, r#"{"cmd":"tables"}"#)["link_up"], false);
        assert_eq!(ok(&mut e, r#"{"cmd":"release"}"#)["released"], 0);
        assert!(ok(&mut e, r#"{"cmd":"transcript"}"#).as_array().is_some());
        assert!(error(&mut e, r#"{"cmd":"event","vf":0,"kind":"explode"}"#).contains("explode"));
    }

    /// Sends `req` from VF `vf` straight to the engine.
    fn send(e: &mut Engine, vf: u16, req: &Request, cookie: u32) {
        e.handle_mailbox(Instant::now(), VfId(vf), &req.to_frame(cookie));
    }

    /// Replies waiting for `vf`, as (cookie, op, status); events are skipped.
    fn replies(e: &mut Engine, vf: u16) -> Vec<(u32, VirtchnlOp, VirtchnlStatus)> {
        let mut out = Vec::new();
        while let Some(frame) = e.receive(VfId(vf), Pair::Mailbox, 4096) {
            if let Ok((h, PfMessage::Reply(r))) = PfMessage::from_frame(&frame) {
                out.push((h.cookie, r.op, r.status));
            }
        }
        out
    }

    #[test]
    fn release_with_a_status_refuses_what_is_held() {
        let mut e = engine();
        for vf in [0, 1] {
            e.connected(VfId(vf));
        }
        ok(&mut e, r#"{"cmd":"fault","action":"hold","count":3}"#);
        send(&mut e, 0, &Request::Version(VersionInfo::V1_1), 7);
        send(&mut e, 0, &Request::GetOffloadVlanV2Caps, 8);
        send(&mut e, 1, &Request::Version(VersionInfo::V1_1), 9);
        assert_eq!(ok(&mut e, r#"{"cmd":"quiesce"}"#)["held"], 3);
        let r = ok(
            &mut e,
            r#"{"cmd":"release","vf":0,"status":"ERR_NOT_SUPPORTED"}"#,
        );
        assert_eq!(r["released"], 2);
        assert_eq!(
            replies(&mut e, 0),
            vec![
                (7, VirtchnlOp::Version, VirtchnlStatus::ErrNotSupported),
                (
                    8,
                    VirtchnlOp::GetOffloadVlanV2Caps,
                    VirtchnlStatus::ErrNotSupported
                ),
            ]
        );
        let transcript = ok(&mut e, r#"{"cmd":"transcript"}"#);
        assert_eq!(
            transcript[0]["outcome"],
            serde_json::json!({"replied": "ERR_NOT_SUPPORTED"})
        );
        assert_eq!(
            ok(&mut e, r#"{"cmd":"tables"}"#)["vfs"]["vf0"]["mailbox"]["requests"],
            0,
            "the PF never saw them"
        );
        // Without a status, vf1's request is handled normally.
        assert_eq!(ok(&mut e, r#"{"cmd":"release"}"#)["released"], 1);
        assert_eq!(
            replies(&mut e, 1),
            vec![(9, VirtchnlOp::Version, VirtchnlStatus::Success)]
        );
        for (line, says) in [
            (
                r#"{"cmd":"release","vf":0,"status":"ERR_PARAMS"}"#,
                "ERR_PARAMS",
            ),
            (r#"{"cmd":"release","vf":5,"status":"ERR_PARAM"}"#, "vf5"),
        ] {
            assert!(error(&mut e, line).contains(says), "{line}");
        }
    }

    #[test]
    fn mailbox_counts_the_frames_a_vf_took() {
        let mut e = engine();
        e.connected(VfId(0));
        ok(
            &mut e,
            r#"{"cmd":"fault","vf":0,"action":"reject","status":"ERR_PARAM"}"#,
        );
        send(&mut e, 0, &Request::Version(VersionInfo::V1_1), 1);
        send(&mut e, 0, &Request::Version(VersionInfo::V1_1), 2);
        let m = ok(&mut e, r#"{"cmd":"mailbox","vf":0}"#);
        assert_eq!(
            m,
            serde_json::json!({"delivered": 0, "waiting": 2, "reordered": 0})
        );
        assert_eq!(replies(&mut e, 0).len(), 2);
        let m = ok(&mut e, r#"{"cmd":"mailbox","vf":0}"#);
        assert_eq!(
            (m["delivered"].clone(), m["waiting"].clone()),
            (2.into(), 0.into())
        );
        assert!(error(&mut e, r#"{"cmd":"mailbox","vf":2}"#).contains("vf2"));
        assert!(error(&mut e, r#"{"cmd":"mailbox"}"#).contains("vf"));
    }
}
