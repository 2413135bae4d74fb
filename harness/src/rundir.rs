//! Per-run artifact directories and short-lived socket directories.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::process::{register_dir, Registration};

/// How many run directories to keep; older ones are removed when a new run
/// starts.
const KEEP_RUNS: usize = 40;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique_suffix() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{secs}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A run's artifact directory under `target/vfrig/runs/`: console log, agent
/// log, QEMU command line. It is kept after the run.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates `target/vfrig/runs/<time>-<pid>-<n>-<label>/` and prunes old
    /// runs.
    pub fn create(label: &str) -> std::io::Result<RunDir> {
        let runs = crate::paths::rig_dir().join("runs");
        std::fs::create_dir_all(&runs)?;
        prune(&runs);
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = runs.join(format!("{}-{label}", unique_suffix()));
        std::fs::create_dir(&path)?;
        Ok(RunDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file in it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

fn prune(runs: &Path) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    let mut dirs: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let modified = e.metadata().ok()?.modified().ok()?;
            Some((modified, e.path()))
        })
        .collect();
    if dirs.len() < KEEP_RUNS {
        return;
    }
    dirs.sort();
    let excess = dirs.len() + 1 - KEEP_RUNS;
    for (_, dir) in dirs.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A private temporary directory for sockets, removed on drop and on a
/// termination signal.
#[derive(Debug)]
pub struct SocketDir {
    path: PathBuf,
    _registration: Registration,
}

impl SocketDir {
    /// Creates `$TMPDIR/vfrig-<time>-<pid>-<n>/` with mode 0700.
    pub fn create() -> std::io::Result<SocketDir> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("vfrig-{}", unique_suffix()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        let registration = register_dir(path.clone());
        Ok(SocketDir {
            path,
            _registration: registration,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_dir_is_private_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = SocketDir::create().unwrap();
        let path = dir.path().to_path_buf();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::write(path.join("x.sock"), b"").unwrap();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn prune_keeps_the_newest_runs() {
        let root = std::env::temp_dir().join(format!("vfrig-prune-{}", unique_suffix()));
        std::fs::create_dir_all(&root).unwrap();
        for i in 0..KEEP_RUNS + 5 {
            std::fs::create_dir(root.join(format!("run{i:03}"))).unwrap();
        }
        prune(&root);
        let left = std::fs::read_dir(&root).unwrap().count();
        assert_eq!(left, KEEP_RUNS - 1);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
