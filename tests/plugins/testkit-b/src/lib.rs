//! testkit, second build: identical but for its tag, so a reload test can see the switch.
const TAG: &str = "b";
include!("../../testkit/src/kit.rs");
