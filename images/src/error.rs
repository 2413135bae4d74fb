//! Errors of the image builder.

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong while building an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path in the initramfs is not a plain relative path.
    #[error("initramfs path {path:?} is not a relative path of normal components (no `..`, no empty parts)")]
    BadPath {
        /// The path as given.
        path: String,
    },
    /// Two entries want the same path, or a path goes through a non-directory.
    #[error("initramfs path {path:?} is already a {existing}; cannot add a {wanted} there")]
    Conflict {
        /// The path.
        path: String,
        /// What is there.
        existing: &'static str,
        /// What was being added.
        wanted: &'static str,
    },
    /// A file larger than newc can describe (4 GiB).
    #[error("initramfs file {path:?} is {len} bytes; newc archives hold files below 4 GiB")]
    TooLarge {
        /// The path.
        path: String,
        /// Its size.
        len: usize,
    },
    /// Writing the archive failed.
    #[error("could not write the initramfs")]
    Write(#[source] std::io::Error),
}
