//! The agent protocol end to end: `vfrig-agent --stdio` as a child process.

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{wait_until, Agent, Scratch};
use vfrig_agent::proto::{Op, Outcome, Reply, Status, OUTPUT_LIMIT};

fn status(agent: &mut Agent) -> Status {
    match agent.ok(Op::Status) {
        Reply::Status(status) => status,
        other => panic!("status replied {other:?}"),
    }
}

#[test]
fn ready_comes_first_and_describes_the_agent() {
    let agent = Agent::start();
    assert_eq!(agent.ready.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(!agent.ready.kernel_release.is_empty());
    assert!(agent.ready.modules.is_empty());
    assert!(agent.ready.uptime_ms >= agent.ready.started_ms);
}

#[test]
fn run_reports_exit_status_and_both_streams() {
    let mut agent = Agent::start();
    let out = agent.run("echo hi; echo err >&2; exit 3", Some(10_000));
    assert_eq!(out.status, Some(3));
    assert_eq!(out.signal, None);
    assert_eq!(out.stdout, "hi\n");
    assert_eq!(out.stderr, "err\n");
    assert!(!out.timed_out && !out.truncated);
}

#[test]
fn run_reports_the_terminating_signal() {
    let mut agent = Agent::start();
    let out = agent.run("kill -USR1 $$", None);
    assert_eq!((out.status, out.signal), (None, Some(libc::SIGUSR1)));
}

#[test]
fn run_feeds_stdin_and_caps_output() {
    let mut agent = Agent::start();
    let reply = agent.ok(Op::Run {
        cmd: "tr a-z A-Z".into(),
        timeout_ms: Some(10_000),
        stdin: Some("shout\n".into()),
    });
    let Reply::Output(out) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(out.stdout, "SHOUT\n");

    let out = agent.run(
        &format!(
            "head -c {} /dev/zero | tr '\\0' a; echo small >&2",
            OUTPUT_LIMIT + 10
        ),
        Some(10_000),
    );
    assert!(out.success());
    assert!(out.truncated);
    assert_eq!(out.stdout.len(), OUTPUT_LIMIT);
    assert_eq!(out.stderr, "small\n");
}

#[test]
fn run_timeout_kills_the_command() {
    let mut agent = Agent::start();
    let start = Instant::now();
    let out = agent.run("echo before; sleep 30", Some(300));
    assert!(start.elapsed() < Duration::from_secs(20), "{out:?}");
    assert!(out.timed_out);
    assert_eq!((out.status, out.signal), (None, Some(libc::SIGKILL)));
    assert_eq!(out.stdout, "before\n");
}

#[test]
fn run_timeout_kills_background_grandchildren_too() {
    let mut agent = Agent::start();
    let out = agent.run("sleep 30 & echo $!; wait", Some(300));
    assert!(out.timed_out, "{out:?}");
    let pid = out.stdout.trim().to_owned();
    assert!(pid.parse::<u32>().is_ok(), "{out:?}");
    // Killed with the group, then reaped by the agent (it is a subreaper).
    wait_until("the grandchild to be gone", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    wait_until("the orphan to be counted", || {
        status(&mut agent).reaped_orphans >= 1
    });
}

#[test]
fn concurrent_runs_reply_in_completion_order() {
    let mut agent = Agent::start();
    let slow = agent.send(Op::Run {
        cmd: "sleep 1; echo slow".into(),
        timeout_ms: Some(10_000),
        stdin: None,
    });
    let fast = agent.send(Op::Run {
        cmd: "echo fast".into(),
        timeout_ms: Some(10_000),
        stdin: None,
    });
    let (first, outcome) = agent.next_reply();
    assert_eq!(first, fast, "{outcome:?}");
    let (second, outcome) = agent.next_reply();
    assert_eq!(second, slow);
    assert!(matches!(outcome, Outcome::Ok(Reply::Output(o)) if o.stdout == "slow\n"));
}

#[test]
fn spawn_and_stop_collect_background_output() {
    let mut agent = Agent::start();
    let dir = Scratch::new("spawn");
    let marker = dir.path().join("printed");
    agent.ok(Op::Spawn {
        name: "ticker".into(),
        cmd: format!(
            "while true; do echo x; touch {}; sleep 0.1; done",
            marker.display()
        ),
    });
    let jobs = status(&mut agent).jobs;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].name, "ticker");
    wait_until("the job to print", || marker.exists());
    assert!(status(&mut agent).jobs[0].running);

    let reply = agent.ok(Op::Stop {
        name: "ticker".into(),
        timeout_ms: None,
    });
    let Reply::Output(out) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(out.signal, Some(libc::SIGTERM));
    assert!(!out.timed_out);
    assert!(out.stdout.starts_with("x\n"), "{out:?}");
    assert!(out.stdout.lines().all(|l| l == "x"), "{out:?}");
    assert!(status(&mut agent).jobs.is_empty());
}

#[test]
fn job_names_must_be_known_and_unique() {
    let mut agent = Agent::start();
    let err = agent
        .call(Op::Stop {
            name: "ghost".into(),
            timeout_ms: None,
        })
        .unwrap_err();
    assert_eq!(err, "no job named \"ghost\"");
    agent.ok(Op::Spawn {
        name: "one".into(),
        cmd: "sleep 30".into(),
    });
    let err = agent
        .call(Op::Spawn {
            name: "one".into(),
            cmd: "true".into(),
        })
        .unwrap_err();
    assert!(err.contains("already exists"), "{err}");
    agent.ok(Op::Stop {
        name: "one".into(),
        timeout_ms: Some(5000),
    });
}

#[test]
fn a_job_that_exited_can_still_be_stopped() {
    let mut agent = Agent::start();
    agent.ok(Op::Spawn {
        name: "brief".into(),
        cmd: "echo bye; exit 4".into(),
    });
    wait_until("the job to exit", || !status(&mut agent).jobs[0].running);
    let reply = agent.ok(Op::Stop {
        name: "brief".into(),
        timeout_ms: None,
    });
    let Reply::Output(out) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!((out.status, out.stdout.as_str()), (Some(4), "bye\n"));
}

#[test]
fn write_then_read_round_trips_bytes() {
    let mut agent = Agent::start();
    let dir = Scratch::new("files");
    let path = dir.path().join("blob");
    let path = path.to_str().unwrap().to_owned();
    let bytes: Vec<u8> = (0..=255u8).rev().chain([b'\n', 0xc3, 0x28]).collect();
    agent.ok(Op::WriteFile {
        path: path.clone(),
        data: STANDARD.encode(&bytes),
        mode: Some(0o600),
        append: false,
    });
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    agent.ok(Op::WriteFile {
        path: path.clone(),
        data: STANDARD.encode(b"tail"),
        mode: None,
        append: true,
    });
    let reply = agent.ok(Op::ReadFile { path: path.clone() });
    let Reply::File { data } = reply else {
        panic!("{reply:?}")
    };
    let mut want = bytes;
    want.extend_from_slice(b"tail");
    assert_eq!(STANDARD.decode(data).unwrap(), want);
}

#[test]
fn file_errors_name_the_path() {
    let mut agent = Agent::start();
    let err = agent
        .call(Op::ReadFile {
            path: "/nonexistent/vfrig".into(),
        })
        .unwrap_err();
    assert_eq!(
        err,
        "read /nonexistent/vfrig: No such file or directory (os error 2)"
    );
    let err = agent
        .call(Op::WriteFile {
            path: "/nonexistent/vfrig".into(),
            data: STANDARD.encode(b"1"),
            mode: None,
            append: true,
        })
        .unwrap_err();
    assert_eq!(
        err,
        "write /nonexistent/vfrig: No such file or directory (os error 2)"
    );
}

#[test]
fn malformed_lines_get_error_replies_and_serving_continues() {
    let mut agent = Agent::start();
    agent.send_raw(br#"{"id":5,"op":"nope"}"#);
    let (id, outcome) = agent.next_reply();
    assert_eq!(id, 5);
    assert!(
        matches!(&outcome, Outcome::Error(e) if e.starts_with("bad request: ")),
        "{outcome:?}"
    );
    agent.send_raw(b"not json");
    let (id, outcome) = agent.next_reply();
    assert_eq!(id, 0);
    assert!(matches!(outcome, Outcome::Error(_)));
    agent.send_raw(&[0xff, 0xfe, b'{']);
    assert_eq!(agent.next_reply().0, 0);
    assert_eq!(agent.sh("echo still here"), "still here\n");
}

#[test]
fn overlong_lines_are_rejected_and_skipped() {
    let mut agent = Agent::start();
    let mut line = br#"{"id":9,"op":"read_file","path":""#.to_vec();
    line.resize(17 << 20, b'a');
    agent.send_raw(&line);
    let (id, outcome) = agent.next_reply();
    assert_eq!(id, 0);
    assert!(
        matches!(&outcome, Outcome::Error(e) if e.contains("longer than")),
        "{outcome:?}"
    );
    assert_eq!(agent.sh("echo next"), "next\n");
}

#[test]
fn poweroff_replies_done_and_exits_zero() {
    let mut agent = Agent::start();
    assert_eq!(agent.ok(Op::Poweroff), Reply::Done);
    assert!(agent.wait_exit().success());
}

#[test]
fn end_of_input_exits_zero() {
    let mut agent = Agent::start();
    agent.close_stdin();
    assert!(agent.wait_exit().success());
}
