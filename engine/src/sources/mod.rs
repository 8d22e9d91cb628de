//! Sources: data that lives outside Tributary and is read in place on every use.

pub mod files;
pub mod http;
pub mod postgres;
mod postgres_copy;
mod sized;
