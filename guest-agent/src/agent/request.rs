//! From a request line to a reply.

use std::time::Duration;

use vfrig_agent::proto::{Op, Reply, Request, Status, UEVENT_GIVE_UP_MAX_MS, UEVENT_GIVE_UP_MS};

use super::error::{Error, Result};
use super::files;
use super::jobs::DEFAULT_STOP_GRACE;
use super::process;
use super::serve::Agent;

/// A line that is not a request: the id to answer with (0 when none could
/// be read) and why.
#[derive(Debug, PartialEq, Eq)]
pub struct BadLine {
    /// The line's `id`, if it was an object with a numeric `id`.
    pub id: u64,
    /// What was wrong.
    pub reason: String,
}

/// Parses one request line.
pub fn parse_line(line: &[u8]) -> std::result::Result<Request, BadLine> {
    match serde_json::from_slice::<Request>(line) {
        Ok(request) if request.id == 0 => Err(BadLine {
            id: 0,
            reason: "request id must not be 0".into(),
        }),
        Ok(request) => Ok(request),
        Err(e) => Err(BadLine {
            id: id_of(line),
            reason: e.to_string(),
        }),
    }
}

/// The numeric `id` of a line that is a JSON object, else 0.
fn id_of(line: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("id")?.as_u64())
        .unwrap_or(0)
}

/// Carries out one operation. [`Op::Poweroff`] is handled by the caller.
pub fn handle(agent: &Agent, op: Op) -> Result<Reply> {
    match op {
        Op::Run {
            cmd,
            timeout_ms,
            stdin,
        } => process::run(
            agent.spawner(),
            &cmd,
            timeout_ms.map(Duration::from_millis),
            stdin,
        )
        .map(Reply::Output),
        Op::Spawn { name, cmd } => agent
            .jobs()
            .spawn(agent.spawner(), &name, &cmd)
            .map(|()| Reply::Done),
        Op::Stop { name, timeout_ms } => agent
            .jobs()
            .stop(
                &name,
                timeout_ms.map_or(DEFAULT_STOP_GRACE, Duration::from_millis),
            )
            .map(Reply::Output),
        Op::ReadFile { path } => files::read(&path).map(|data| Reply::File { data }),
        Op::WriteFile {
            path,
            data,
            mode,
            append,
        } => files::write(&path, &data, mode, append).map(|()| Reply::Done),
        Op::RecordStart => agent.recorder().start().map(|()| Reply::Done),
        Op::RecordTake => agent.recorder().take().map(Reply::Events),
        Op::RecordStop => agent.recorder().stop().map(Reply::Events),
        Op::UeventStart { give_up_ms } => {
            let give_up_ms = give_up_ms.unwrap_or(UEVENT_GIVE_UP_MS);
            if give_up_ms > UEVENT_GIVE_UP_MAX_MS {
                return Err(Error::BadRequest {
                    reason: format!(
                        "give_up_ms {give_up_ms} is over the limit of {UEVENT_GIVE_UP_MAX_MS}"
                    ),
                });
            }
            agent
                .uevents()
                .start(Duration::from_millis(give_up_ms))
                .map(|()| Reply::Done)
        }
        Op::UeventTake => agent.uevents().take().map(Reply::NetAdds),
        Op::UeventStop => agent.uevents().stop().map(Reply::NetAdds),
        Op::Status => Ok(Reply::Status(Status {
            uptime_ms: super::clock::boottime_ms(),
            jobs: agent.jobs().list(),
            reaped_orphans: agent.spawner().reaper().orphans(),
            recording: agent.recorder().is_recording(),
            uevent_recording: agent.uevents().is_recording(),
        })),
        Op::Poweroff => Err(Error::BadRequest {
            reason: "poweroff is handled by the request loop".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expect: std::result::Result<Request, (u64, &str)>) {
        let got = parse_line(line.as_bytes()).map_err(|bad| (bad.id, bad.reason));
        match (got, expect) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err((id, reason)), Err((want_id, want_reason))) => {
                assert_eq!(id, want_id, "{line}");
                assert!(
                    reason.contains(want_reason),
                    "{reason:?} lacks {want_reason:?}"
                );
            }
            (got, want) => panic!("{line}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn valid_requests_parse() {
        check(
            r#"{"id":3,"op":"status"}"#,
            Ok(Request {
                id: 3,
                op: Op::Status,
            }),
        );
        check(
            r#"{"id":4,"op":"stop","name":"x"}"#,
            Ok(Request {
                id: 4,
                op: Op::Stop {
                    name: "x".into(),
                    timeout_ms: None,
                },
            }),
        );
    }

    #[test]
    fn bad_lines_keep_their_id_when_they_have_one() {
        check(
            r#"{"id":5,"op":"nope"}"#,
            Err((5, "unknown variant `nope`")),
        );
        check(r#"{"id":6,"op":"run"}"#, Err((6, "missing field `cmd`")));
        check(r#"{"id":7}"#, Err((7, "op")));
        check("not json", Err((0, "expected")));
        check(r#"[1,2]"#, Err((0, "")));
        check(r#"{"id":"8","op":"status"}"#, Err((0, "")));
        check(r#"{"id":-1,"op":"status"}"#, Err((0, "")));
        check(r#"{"id":0,"op":"status"}"#, Err((0, "must not be 0")));
        check("", Err((0, "EOF")));
    }
}
