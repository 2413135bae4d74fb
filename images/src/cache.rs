//! The on-disk cache: content keys, and directories that appear whole.
//!
//! Everything is built in a `.tmp-*` directory next to its final place and
//! renamed into place as the last step, so an interrupted build or download
//! never looks finished. Two processes building the same thing at once both
//! succeed: the second rename fails, and the loser drops its copy and uses
//! the winner's. Temporary directories left by dead processes are removed
//! the next time one is created next to them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Hex digits of a cache key.
pub(crate) const KEY_LEN: usize = 20;

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// SHA-256 of `data`, hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Builds a cache key from labelled fields. Each label and value is written
/// with its length, so no two different field lists hash alike.
#[derive(Debug, Clone)]
pub(crate) struct KeyHasher(Sha256);

impl KeyHasher {
    /// A key in `namespace` (`image`, `bare`).
    pub(crate) fn new(namespace: &str) -> Self {
        let mut hasher = Self(Sha256::new());
        hasher.field("namespace", namespace);
        hasher
    }

    /// Adds one field.
    pub(crate) fn field(&mut self, label: &str, value: impl AsRef<[u8]>) -> &mut Self {
        for part in [label.as_bytes(), value.as_ref()] {
            let len = u64::try_from(part.len()).unwrap_or(u64::MAX);
            self.0.update(len.to_le_bytes());
            self.0.update(part);
        }
        self
    }

    /// The key: the first [`KEY_LEN`] hex digits of the hash.
    pub(crate) fn finish(self) -> String {
        let mut key = hex(&self.0.finalize());
        key.truncate(KEY_LEN);
        key
    }
}

/// `len:mtime_ns` of a file, or `-` if it does not exist. Used where hashing
/// contents would cost too much (whole module trees, apt's lists).
pub(crate) fn stat_stamp(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{mtime}", meta.len())
        }
        Err(_) => "-".to_owned(),
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
const TEMP_PREFIX: &str = ".tmp-";

/// A scratch directory next to where its result will live; removed on drop
/// unless published.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
    published: bool,
}

impl TempDir {
    /// Creates `parent/.tmp-<label>-<pid>-<n>` (and `parent`).
    pub(crate) fn new_in(parent: &Path, label: &str) -> Result<Self> {
        std::fs::create_dir_all(parent).map_err(Error::io("create directory", parent))?;
        remove_stale(parent);
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("{TEMP_PREFIX}{label}-{}-{n}", std::process::id()));
        std::fs::create_dir(&path).map_err(Error::io("create directory", &path))?;
        Ok(Self {
            path,
            published: false,
        })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the directory to `dest`. Returns `false` (and drops this
    /// copy) if another process put `dest` in place first.
    pub(crate) fn publish(mut self, dest: &Path) -> Result<bool> {
        match std::fs::rename(&self.path, dest) {
            Ok(()) => {
                self.published = true;
                Ok(true)
            }
            Err(_) if dest.is_dir() => Ok(false),
            Err(e) => Err(Error::io("rename into place", dest)(e)),
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = ?self.path, %error, "could not remove a temporary directory");
        }
    }
}

/// Removes `.tmp-*-<pid>-<n>` entries of processes that no longer exist.
/// Without `/proc` nothing is removed.
fn remove_stale(parent: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
            continue;
        };
        let mut parts = rest.rsplitn(3, '-');
        let (Some(_n), Some(pid), Some(_label)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            tracing::debug!(path = ?entry.path(), "removing a stale temporary directory");
            // Another process may be removing it too.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A unique scratch directory for a test, removed on drop.
    pub(crate) fn scratch(label: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir().join("vfrig-images-tests"), label)
            .expect("temporary directory")
    }

    /// Every key in `changed` (one per changed input) differs from `key`
    /// and from every other.
    pub(crate) fn assert_all_differ<K: PartialEq + std::fmt::Debug>(key: &K, changed: &[K]) {
        for (i, other) in changed.iter().enumerate() {
            assert_ne!(other, key, "change {i}");
            for (j, another) in changed.iter().enumerate().skip(i + 1) {
                assert_ne!(other, another, "changes {i} and {j}");
            }
        }
    }

    #[test]
    fn keys_depend_on_every_label_and_value_and_their_boundaries() {
        let key = |fields: &[(&str, &str)]| {
            let mut h = KeyHasher::new("image");
            for (label, value) in fields {
                h.field(label, value);
            }
            h.finish()
        };
        let base = key(&[("a", "1"), ("b", "2")]);
        assert_eq!(base.len(), KEY_LEN);
        assert_eq!(base, key(&[("a", "1"), ("b", "2")]));
        for other in [
            key(&[("a", "1"), ("b", "3")]),
            key(&[("a", "1"), ("c", "2")]),
            key(&[("a", "12"), ("b", "")]),
            key(&[("a", "1")]),
            key(&[("b", "2"), ("a", "1")]),
        ] {
            assert_ne!(base, other);
        }
        let mut bare = KeyHasher::new("bare");
        bare.field("a", "1").field("b", "2");
        assert_ne!(base, bare.finish());
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }

    #[test]
    fn a_published_directory_appears_whole_and_a_second_one_yields() {
        let root = scratch("publish");
        let dest = root.path().join("entry");
        let first = TempDir::new_in(root.path(), "entry").expect("created");
        std::fs::write(first.path().join("f"), b"1").expect("written");
        assert!(first.publish(&dest).expect("published"));
        let second = TempDir::new_in(root.path(), "entry").expect("created");
        std::fs::write(second.path().join("f"), b"2").expect("written");
        let second_path = second.path().to_owned();
        assert!(!second.publish(&dest).expect("yields"));
        assert!(!second_path.exists(), "the loser's copy is removed");
        assert_eq!(std::fs::read(dest.join("f")).expect("read"), b"1");
    }

    #[test]
    fn temporary_directories_of_dead_processes_are_removed() {
        let root = scratch("stale");
        // No process has PID u32::MAX - 1 (the kernel's limit is 2^22).
        let stale = root
            .path()
            .join(format!("{TEMP_PREFIX}x-{}-0", u32::MAX - 1));
        std::fs::create_dir(&stale).expect("created");
        let live = TempDir::new_in(root.path(), "x").expect("created");
        assert!(!stale.exists());
        assert!(live.path().exists());
        drop(live);
        assert_eq!(std::fs::read_dir(root.path()).expect("listed").count(), 0);
    }
}
