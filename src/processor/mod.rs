//! The stream processor: the seed's four queries over one stream of records.
//!
//! - [`operator`]: the operator trait and queries 1 (raw) and 3 (alerts);
//! - [`window`]: query 2, tumbling windows closed by the watermark;
//! - [`console`]: query 4, the live console table;
//! - [`engine`]: decoding, per-partition watermarks and offsets, the operators in order;
//! - [`runtime`]: the async loop between a [`crate::broker::Source`] and a
//!   [`crate::store::Store`].

pub mod console;
pub mod engine;
pub mod operator;
pub mod runtime;
pub mod window;

pub use engine::{Engine, EngineConfig};
pub use runtime::{Processor, ProcessorError, RunSummary, RuntimeConfig};
