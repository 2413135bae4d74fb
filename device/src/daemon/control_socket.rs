//! The control socket: accepts connections and answers one JSON line with
//! one JSON line, through [`crate::control::handle_line`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::thread::JoinHandle;

use tracing::{debug, warn};

use super::device::Device;
use crate::control::handle_line;

/// Longest request line accepted; longer lines are answered with an error.
const MAX_LINE: usize = 1 << 20;

/// Serves `listener` until it fails or the process ends; one thread per client.
pub fn spawn(listener: UnixListener, device: Arc<Device>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("vfrig-control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        let device = Arc::clone(&device);
                        let spawned = std::thread::Builder::new()
                            .name("vfrig-control-client".into())
                            .spawn(move || serve_client(stream, &device));
                        if let Err(err) = spawned {
                            warn!(%err, "could not start a control client thread");
                        }
                    }
                    Err(err) => {
                        warn!(%err, "control socket accept failed; no more control clients");
                        return;
                    }
                }
            }
        })
}

fn serve_client(stream: UnixStream, device: &Device) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(err) => {
            warn!(%err, "control client: could not clone the stream");
            return;
        }
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line);
        let reply = match read {
            Ok(0) => return,
            Ok(_) if line.len() > MAX_LINE && !line.ends_with(b"\n") => {
                // Skip the rest of the over-long line before answering.
                let mut rest = Vec::new();
                if reader.read_until(b'\n', &mut rest).is_err() {
                    return;
                }
                format!(r#"{{"error":"request longer than {MAX_LINE} bytes"}}"#)
            }
            Ok(_) => match std::str::from_utf8(&line) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => device.with(|engine, now| handle_line(engine, now, text.trim())),
                Err(_) => r#"{"error":"bad request: not UTF-8"}"#.to_owned(),
            },
            Err(err) => {
                debug!(%err, "control client went away");
                return;
            }
        };
        if writer
            .write_all(reply.as_bytes())
            .and_then(|()| writer.write_all(b"\n"))
            .is_err()
        {
            return;
        }
    }
}
