//! Test doubles shared by this crate's tests and other crates' tests
//! (feature `test-support`).
