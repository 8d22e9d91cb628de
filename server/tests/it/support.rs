//! The shared test kit (`tributary-testkit`): `TestServer` and its helpers.

pub use tributary_testkit::*;
