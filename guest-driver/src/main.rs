//! `vfrig-driver`: the VF driver process in the guest.

fn main() {}
