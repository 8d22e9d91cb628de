//! Integration tests against the real `tributary` binary, started on port 0.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod apply;
mod auth;
mod clustering;
mod data_tests;
mod docs_site;
mod example;
mod format_compat;
mod housekeeping;
mod http_source;
mod incremental;
mod jobs;
mod lineage;
mod metrics;
mod postgres_source;
mod protocol;
mod psql_compat;
mod restart;
mod scheduler;
