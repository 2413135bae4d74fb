//! Where the rig keeps its files.
//!
//! Everything the rig builds or records lives under the workspace's cargo
//! target directory, in `vfrig/`: images, downloads, run artifacts and the
//! accelerator probe result. Sockets go to a short directory under the system
//! temporary directory instead, because a unix socket path must fit in 108
//! bytes.

use std::path::{Path, PathBuf};

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else `target/` in
/// the workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The rig's own directory under the target directory.
pub fn rig_dir() -> PathBuf {
    target_dir().join("vfrig")
}
