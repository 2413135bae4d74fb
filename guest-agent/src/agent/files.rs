//! Guest files ([`Op::ReadFile`], [`Op::WriteFile`]); data travels base64.
//!
//! [`Op::ReadFile`]: vfrig_agent::proto::Op::ReadFile
//! [`Op::WriteFile`]: vfrig_agent::proto::Op::WriteFile

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::error::{Error, Result};

/// Permission bits for a new file when the request gives none.
pub const DEFAULT_MODE: u32 = 0o644;

/// Reads all of `path` and returns it base64-encoded.
pub fn read(path: &str) -> Result<String> {
    let data = std::fs::read(path).map_err(|error| Error::ReadFile {
        path: path.to_owned(),
        error,
    })?;
    Ok(STANDARD.encode(data))
}

/// Writes base64 `data` to `path`.
///
/// With `append` the file must exist and is opened `O_WRONLY|O_APPEND`
/// without creating or truncating it, which is what sysfs and procfs
/// attributes want; the bytes go out in one `write` when they can.
/// Otherwise the file is created (with `mode`, default 0o644) or truncated.
pub fn write(path: &str, data: &str, mode: Option<u32>, append: bool) -> Result<()> {
    let bytes = STANDARD.decode(data).map_err(|error| Error::Base64 {
        path: path.to_owned(),
        error,
    })?;
    let mut options = OpenOptions::new();
    if append {
        options.append(true);
    } else {
        options
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode.unwrap_or(DEFAULT_MODE));
    }
    let write_err = |error| Error::WriteFile {
        path: path.to_owned(),
        error,
    };
    let mut file = options.open(path).map_err(write_err)?;
    file.write_all(&bytes).map_err(write_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::test_util::Scratch;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_with_mode() {
        let dir = Scratch::new("files-rt");
        let path = dir.path().join("f");
        let path = path.to_str().unwrap();
        let bytes = [0u8, 0xff, b'\n', 0xc3, 0x28];
        write(path, &STANDARD.encode(bytes), Some(0o600), false).unwrap();
        assert_eq!(STANDARD.decode(read(path).unwrap()).unwrap(), bytes);
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second plain write replaces the contents.
        write(path, &STANDARD.encode(b"x"), None, false).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"x");
    }

    #[test]
    fn append_adds_and_never_creates() {
        let dir = Scratch::new("files-append");
        let path = dir.path().join("f");
        let path = path.to_str().unwrap();
        std::fs::write(path, b"a").unwrap();
        write(path, &STANDARD.encode(b"b"), None, true).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"ab");
        let missing = dir.path().join("missing");
        let missing = missing.to_str().unwrap();
        let err = write(missing, &STANDARD.encode(b"b"), None, true).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("write {missing}: ")),
            "{err}"
        );
        assert!(std::fs::metadata(missing).is_err());
    }

    #[test]
    fn errors_name_the_path() {
        let err = read("/nonexistent/vfrig").unwrap_err().to_string();
        assert!(err.starts_with("read /nonexistent/vfrig: "), "{err}");
        assert!(err.contains("os error 2"), "{err}");
        let err = write("/tmp/x", "not base64!", None, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("write /tmp/x: data is not valid base64"),
            "{err}"
        );
    }
}
