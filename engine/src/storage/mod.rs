//! Storage: every table and model is a Delta table under the warehouse root.

pub mod cluster;
pub mod deletion;
pub mod delta;
pub mod durable;
pub mod housekeeping;
pub mod key_sort;
pub mod page_index;
pub mod scan;
pub mod write;
