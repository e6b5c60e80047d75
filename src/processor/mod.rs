//! The stream processor: the seed's four queries over one stream of records.
//!
//! - [`engine`]: decoding, per-partition offsets and watermarks, and each event's fate;
//! - [`dedup`]: the identity stage: new, repeat, or a reused id;
//! - [`window`]: query 2's rule: an event's tumbling window, or late;
//! - [`console`]: query 4, the live console table;
//! - [`runtime`]: the async loop between a [`crate::broker::Source`] and a
//!   [`crate::store::Sink`].
//! - [`stage`]: the engine beside the run loop: a large poll processed on rayon's pool while
//!   the loop reads the next.
//!
//! Queries 1 to 3 end in the store: the engine hands it each accepted event with its raw row's
//! expiry and its placement, and the store writes the raw row, the alert, and the window
//! counts (at every resolution) or the late row together, only if the event is new to it.

pub mod console;
pub mod dedup;
pub mod engine;
pub mod runtime;
pub mod stage;
pub mod window;

pub use engine::{Engine, EngineConfig, check_time};
pub use runtime::{Processor, ProcessorError, RunSummary, RuntimeConfig};
