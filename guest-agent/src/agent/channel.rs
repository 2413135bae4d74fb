//! The byte stream to the harness: finding the virtio-console port, reading
//! request lines (bounded in length) and writing messages, one line each,
//! through a single lock.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vfrig_agent::proto::Message;

use super::lock;

/// Longest request line accepted; longer ones get an error reply and are
/// skipped.
pub const MAX_LINE: usize = 16 << 20;

/// Where virtio-console ports are listed.
pub const VIRTIO_PORTS: &str = "/sys/class/virtio-ports";

/// The device node of the port named `name`, from `<ports>/<vportNpM>/name`.
pub fn find_port(ports: &Path, name: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(ports)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let port_name = std::fs::read_to_string(entry.path().join("name")).ok()?;
            (port_name.trim_end() == name).then(|| Path::new("/dev").join(entry.file_name()))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Looks for the port every 100 ms until `patience` runs out; the device
/// may appear after the agent starts.
pub fn wait_for_port(ports: &Path, name: &str, patience: Duration) -> Option<PathBuf> {
    let deadline = Instant::now() + patience;
    let mut logged = false;
    loop {
        if let Some(path) = find_port(ports, name) {
            return Some(path);
        }
        if Instant::now() >= deadline {
            return None;
        }
        if !logged {
            agent_log!("waiting for virtio port {name}");
            logged = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Opens a port device for reading and writing.
pub fn open_port(path: &Path) -> io::Result<Arc<File>> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(Arc::new)
}

/// Reads through a shared port file.
#[derive(Debug)]
pub struct PortReader(pub Arc<File>);

impl Read for PortReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

/// One step of reading lines.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A line (without its newline) is in the buffer.
    Line,
    /// A line longer than the limit was read and thrown away.
    TooLong,
    /// End of file; the buffer holds any unterminated last line.
    Eof,
}

/// Reads the next line of `reader` into `line` (cleared first), without
/// the newline. Lines longer than `max` are skipped without being stored.
pub fn read_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    line.clear();
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if too_long {
                line.clear();
                LineRead::TooLong
            } else {
                LineRead::Eof
            });
        }
        let (chunk, newline) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (available.get(..i).unwrap_or_default(), true),
            None => (available, false),
        };
        let used = chunk.len() + usize::from(newline);
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if newline {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

/// The single writer all messages go through.
///
/// Each message is one `write_all` of a whole line followed by a flush, under
/// one lock, so lines never interleave. While there is no sink (the port is
/// being reopened) senders wait for one.
#[derive(Debug, Default)]
pub struct Writer {
    sink: Mutex<Option<Sink>>,
    ready: Condvar,
}

/// Where the lines go.
#[derive(Debug)]
pub enum Sink {
    /// The virtio-console port.
    Port(Arc<File>),
    /// The process's stdout.
    Stdout(io::Stdout),
    /// Anything else (tests).
    #[cfg(test)]
    Buffer(Vec<u8>),
}

impl Writer {
    /// A writer sending to `sink`.
    pub fn new(sink: Sink) -> Self {
        Self {
            sink: Mutex::new(Some(sink)),
            ready: Condvar::new(),
        }
    }

    /// Replaces the sink (or removes it with `None`).
    pub fn set_sink(&self, sink: Option<Sink>) {
        *lock(&self.sink) = sink;
        self.ready.notify_all();
    }

    /// Sends one message as one line.
    pub fn send(&self, message: &Message) -> io::Result<()> {
        let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
        line.push(b'\n');
        let sink = lock(&self.sink);
        let mut sink = self
            .ready
            .wait_while(sink, |s| s.is_none())
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match sink.as_mut() {
            Some(Sink::Port(file)) => {
                let mut file = &**file;
                file.write_all(&line)?;
                file.flush()
            }
            Some(Sink::Stdout(stdout)) => {
                let mut out = stdout.lock();
                out.write_all(&line)?;
                out.flush()
            }
            #[cfg(test)]
            Some(Sink::Buffer(buf)) => {
                buf.extend_from_slice(&line);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Exits the process once no message is half written: the lock is
    /// taken (waiting out any write in progress) and never released.
    pub fn exit_when_idle(&self, code: i32) -> ! {
        let _sink = lock(&self.sink);
        std::process::exit(code)
    }

    /// What a test sink has received.
    #[cfg(test)]
    pub fn buffered(&self) -> Vec<u8> {
        match lock(&self.sink).as_ref() {
            Some(Sink::Buffer(buf)) => buf.clone(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use vfrig_agent::proto::{Outcome, Reply};

    fn lines(input: &[u8], max: usize) -> Vec<(LineRead, String)> {
        let mut reader = io::BufReader::with_capacity(4, Cursor::new(input.to_vec()));
        let mut line = Vec::new();
        let mut out = Vec::new();
        loop {
            let step = read_line(&mut reader, &mut line, max).unwrap();
            let text = String::from_utf8_lossy(&line).into_owned();
            let eof = step == LineRead::Eof;
            out.push((step, text));
            if eof {
                return out;
            }
        }
    }

    #[test]
    fn lines_split_on_newlines_across_buffer_refills() {
        assert_eq!(
            lines(b"hello world\n\nx\nlast", 100),
            vec![
                (LineRead::Line, "hello world".into()),
                (LineRead::Line, "".into()),
                (LineRead::Line, "x".into()),
                (LineRead::Eof, "last".into()),
            ]
        );
    }

    #[test]
    fn overlong_lines_are_skipped_whole() {
        assert_eq!(
            lines(b"12345\n123456789\nok\n1234567", 5),
            vec![
                (LineRead::Line, "12345".into()),
                (LineRead::TooLong, "".into()),
                (LineRead::Line, "ok".into()),
                (LineRead::TooLong, "".into()),
                (LineRead::Eof, "".into()),
            ]
        );
    }

    #[test]
    fn finds_the_port_by_name() {
        let scratch = crate::agent::test_util::Scratch::new("ports");
        let root = scratch.path();
        for (dir, name) in [
            ("vport0p0", "org.qemu.guest_agent.0"),
            ("vport1p1", "org.vfrig.agent.0"),
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            std::fs::write(root.join(dir).join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(
            find_port(root, "org.vfrig.agent.0"),
            Some(PathBuf::from("/dev/vport1p1"))
        );
        assert_eq!(find_port(root, "org.vfrig.other"), None);
        assert_eq!(find_port(Path::new("/nonexistent/vfrig"), "x"), None);
        assert_eq!(wait_for_port(root, "org.vfrig.other", Duration::ZERO), None);
    }

    #[test]
    fn each_message_is_one_line() {
        let writer = Writer::new(Sink::Buffer(Vec::new()));
        for id in [1, 2] {
            writer
                .send(&Message::Reply {
                    id,
                    outcome: Outcome::Ok(Reply::Done),
                })
                .unwrap();
        }
        assert_eq!(
            String::from_utf8(writer.buffered()).unwrap(),
            "{\"reply\":{\"id\":1,\"ok\":\"done\"}}\n{\"reply\":{\"id\":2,\"ok\":\"done\"}}\n"
        );
    }
}
