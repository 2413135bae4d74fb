//! A reproducible initramfs: a newc cpio archive, gzip-compressed, written
//! in Rust.
//!
//! Entries live in a sorted map keyed by path, so parents always come before
//! their children in the archive, as the kernel's unpacker needs. Every
//! entry has uid and gid 0, mtime 0 and an inode number from its position,
//! and the gzip header carries no name or time: the same entries always give
//! the same bytes, whatever order they were added in, which is what makes
//! the image cache content-addressed.

use std::collections::BTreeMap;
use std::io::Write;

use cpio::newc::{Builder, ModeFileType};
use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};

use crate::{Error, Result};

/// One thing in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory with permission bits `mode`.
    Dir {
        /// Permission bits (0o755).
        mode: u32,
    },
    /// A regular file.
    File {
        /// Permission bits (0o644, 0o755).
        mode: u32,
        /// Its contents.
        data: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// Where it points.
        target: String,
    },
    /// A character device node (`dev/console` must exist for PID 1's output).
    CharDev {
        /// Permission bits.
        mode: u32,
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

impl Entry {
    fn kind(&self) -> &'static str {
        match self {
            Entry::Dir { .. } => "directory",
            Entry::File { .. } => "file",
            Entry::Symlink { .. } => "symlink",
            Entry::CharDev { .. } => "character device",
        }
    }
}

/// The contents of an initramfs, to be written as a newc archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (and its missing parents, mode 0755).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        self.insert(path, Entry::Dir { mode })
    }

    /// Adds a regular file (and its missing parents).
    pub fn file(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Result<&mut Self> {
        let data = data.into();
        if u32::try_from(data.len()).is_err() {
            return Err(Error::TooLarge {
                path: path.to_owned(),
                len: data.len(),
            });
        }
        self.insert(path, Entry::File { mode, data })
    }

    /// Adds a symbolic link (and its missing parents).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        self.insert(
            path,
            Entry::Symlink {
                target: target.to_owned(),
            },
        )
    }

    /// Adds a character device node (and its missing parents).
    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<&mut Self> {
        self.insert(path, Entry::CharDev { mode, major, minor })
    }

    /// The entries, sorted by path.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    /// The entry at `path` (`/a/b` and `a/b` are the same path), if any.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        normalise(path).ok().and_then(|p| self.entries.get(&p))
    }

    /// Whether something is at `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// How many entries the archive holds (directories, files, links, nodes).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the archive is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, path: &str, entry: Entry) -> Result<&mut Self> {
        let path = normalise(path)?;
        // Missing parents become directories; existing ones must be directories.
        for (end, _) in path.match_indices('/') {
            let parent = &path[..end];
            match self.entries.get(parent) {
                None => {
                    self.entries
                        .insert(parent.to_owned(), Entry::Dir { mode: 0o755 });
                }
                Some(Entry::Dir { .. }) => {}
                Some(other) => {
                    return Err(Error::Conflict {
                        path: parent.to_owned(),
                        existing: other.kind(),
                        wanted: "directory",
                    })
                }
            }
        }
        match (self.entries.get(&path), &entry) {
            // Re-adding a directory only updates its mode.
            (None, _) | (Some(Entry::Dir { .. }), Entry::Dir { .. }) => {}
            (Some(existing), _) if *existing == entry => {}
            (Some(existing), _) => {
                return Err(Error::Conflict {
                    path,
                    existing: existing.kind(),
                    wanted: entry.kind(),
                })
            }
        }
        self.entries.insert(path, entry);
        Ok(self)
    }

    /// Writes the uncompressed newc archive.
    pub fn write_cpio<W: Write>(&self, out: W) -> Result<W> {
        let mut out = out;
        for (index, (path, entry)) in self.entries.iter().enumerate() {
            // Inode 0 is avoided; the trailer has none.
            let ino = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let base = Builder::new(path).ino(ino).uid(0).gid(0).mtime(0);
            let (builder, data): (Builder, &[u8]) = match entry {
                Entry::Dir { mode } => (
                    base.mode(*mode)
                        .set_mode_file_type(ModeFileType::Directory)
                        .nlink(2),
                    &[],
                ),
                Entry::File { mode, data } => (
                    base.mode(*mode)
                        .set_mode_file_type(ModeFileType::Regular)
                        .nlink(1),
                    data,
                ),
                Entry::Symlink { target } => (
                    base.mode(0o777)
                        .set_mode_file_type(ModeFileType::Symlink)
                        .nlink(1),
                    target.as_bytes(),
                ),
                Entry::CharDev { mode, major, minor } => (
                    base.mode(*mode)
                        .set_mode_file_type(ModeFileType::Char)
                        .nlink(1)
                        .rdev_major(*major)
                        .rdev_minor(*minor),
                    &[],
                ),
            };
            // Sizes were checked when the entry was added.
            let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
            let mut writer = builder.write(out, len);
            writer.write_all(data).map_err(Error::Write)?;
            out = writer.finish().map_err(Error::Write)?;
        }
        cpio::newc::trailer(out).map_err(Error::Write)
    }

    /// Writes the archive gzip-compressed at the best (slowest) level, with
    /// no name or time in the gzip header, so equal contents give equal bytes.
    pub fn write_gzip<W: Write>(&self, out: W) -> Result<W> {
        self.write_gzip_level(out, 9)
    }

    /// Writes the archive gzip-compressed at `level` (0 = stored, 1 = fastest,
    /// 9 = smallest; larger values are taken as 9).
    pub fn write_gzip_level<W: Write>(&self, out: W, level: u32) -> Result<W> {
        let encoder: GzEncoder<W> = GzBuilder::new()
            .mtime(0)
            .write(out, Compression::new(level.min(9)));
        self.write_cpio(encoder)?.finish().map_err(Error::Write)
    }
}

/// `a/b/c` from `/a//b/c/`; `..`, `.` and empty paths are refused.
fn normalise(path: &str) -> Result<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == ".." || *p == ".") {
        return Err(Error::BadPath {
            path: path.to_owned(),
        });
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use proptest::prelude::*;

    use super::*;

    /// One entry as read back: name, mode, (rdev major, minor), data.
    type ReadEntry = (String, u32, (u32, u32), Vec<u8>);

    /// Reads an archive back with the cpio crate.
    fn read_back(archive: &[u8]) -> Vec<ReadEntry> {
        let mut out = Vec::new();
        let mut rest = archive;
        loop {
            let mut reader = cpio::newc::Reader::new(rest).expect("a valid newc entry");
            let entry = reader.entry();
            if entry.is_trailer() {
                break;
            }
            let meta = (
                entry.name().to_owned(),
                entry.mode(),
                (entry.rdev_major(), entry.rdev_minor()),
            );
            let mut data = Vec::new();
            reader.read_to_end(&mut data).expect("entry data");
            out.push((meta.0, meta.1, meta.2, data));
            rest = reader.finish().expect("next entry");
        }
        out
    }

    fn sample() -> Initramfs {
        let mut fs = Initramfs::new();
        fs.file("/init", 0o755, b"#!/bin/sh\n".to_vec())
            .and_then(|f| f.file("bin/busybox", 0o755, vec![0x7f, b'E', b'L', b'F']))
            .and_then(|f| f.symlink("bin/sh", "busybox"))
            .and_then(|f| f.char_dev("dev/console", 0o600, 5, 1))
            .and_then(|f| f.dir("proc", 0o555))
            .expect("valid entries");
        fs
    }

    #[test]
    fn entries_read_back_with_their_types_modes_and_contents() {
        let archive = sample().write_cpio(Vec::new()).expect("written");
        let entries = read_back(&archive);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "init",
                "proc"
            ]
        );
        let find = |name: &str| {
            entries
                .iter()
                .find(|e| e.0 == name)
                .expect("present")
                .clone()
        };
        assert_eq!(find("bin").1, 0o040755);
        assert_eq!(find("bin/busybox").1, 0o100755);
        assert_eq!(
            find("bin/sh"),
            ("bin/sh".into(), 0o120777, (0, 0), b"busybox".to_vec())
        );
        assert_eq!(find("dev/console").1, 0o020600);
        assert_eq!(find("dev/console").2, (5, 1));
        assert_eq!(find("init").3, b"#!/bin/sh\n");
        assert_eq!(find("proc").1, 0o040555);
    }

    #[test]
    fn the_same_entries_give_the_same_bytes_in_any_order() {
        let mut other = Initramfs::new();
        other
            .dir("proc", 0o555)
            .and_then(|f| f.char_dev("dev/console", 0o600, 5, 1))
            .and_then(|f| f.symlink("bin/sh", "busybox"))
            .and_then(|f| f.file("bin/busybox", 0o755, vec![0x7f, b'E', b'L', b'F']))
            .and_then(|f| f.file("init", 0o755, b"#!/bin/sh\n".to_vec()))
            .expect("valid entries");
        let a = sample().write_gzip(Vec::new()).expect("written");
        let b = other.write_gzip(Vec::new()).expect("written");
        assert_eq!(a, b);
        let mut cpio = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut cpio)
            .expect("valid gzip");
        assert_eq!(cpio, sample().write_cpio(Vec::new()).expect("written"));
    }

    #[test]
    fn bad_paths_and_conflicts_are_refused_with_the_path() {
        let mut fs = sample();
        for bad in ["", "/", "a/../b", "./init"] {
            let err = fs.file(bad, 0o644, Vec::new()).expect_err("bad path");
            assert!(matches!(err, Error::BadPath { .. }), "{bad}: {err}");
        }
        let err = fs
            .file("bin/sh/x", 0o644, Vec::new())
            .expect_err("through a symlink");
        assert_eq!(
            err.to_string(),
            "initramfs path \"bin/sh\" is already a symlink; cannot add a directory there"
        );
        assert!(fs.dir("init", 0o755).is_err(), "a file is not a directory");
        assert!(
            fs.file("init", 0o755, b"other".to_vec()).is_err(),
            "no silent replacement"
        );
        assert!(
            fs.file("init", 0o755, b"#!/bin/sh\n".to_vec()).is_ok(),
            "the same entry again is fine"
        );
        assert!(
            fs.dir("bin", 0o700).is_ok(),
            "a directory again updates its mode"
        );
    }

    proptest! {
        #[test]
        fn any_set_of_files_round_trips(
            files in proptest::collection::btree_map("[a-z]{1,6}(/[a-z]{1,6}){0,2}", proptest::collection::vec(any::<u8>(), 0..300), 1..20)
        ) {
            let mut fs = Initramfs::new();
            let mut added = BTreeMap::new();
            for (path, data) in &files {
                // A path may collide with another file's parent directory.
                if fs.file(path, 0o644, data.clone()).is_ok() {
                    added.insert(path.clone(), data.clone());
                }
            }
            let archive = fs.write_cpio(Vec::new()).expect("written");
            let back: BTreeMap<String, Vec<u8>> = read_back(&archive)
                .into_iter()
                .filter(|e| e.1 & 0o170000 == 0o100000)
                .map(|e| (e.0, e.3))
                .collect();
            prop_assert_eq!(back, added);
        }
    }
}
