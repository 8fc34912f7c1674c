//! Integration tests of the chaos crate.
