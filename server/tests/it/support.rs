//! The shared test kit (`tributary-testkit`): `TestServer` and its helpers.

pub(crate) use tributary_testkit::*;
