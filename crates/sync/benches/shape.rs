//! Benchmarks of `shape` and templates (filled in below).
fn main() {}
