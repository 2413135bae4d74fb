//! Guest driver benchmark (being written).

fn main() {}
