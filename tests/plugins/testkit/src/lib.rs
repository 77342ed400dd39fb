//! testkit, first build (tag `a`).
const TAG: &str = "a";
include!("kit.rs");
