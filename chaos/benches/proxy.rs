//! Proxy overhead benchmark (filled in later).
fn main() {}
