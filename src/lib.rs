//! CityStream: a real-time city-event pipeline in one binary.
//!
//! # Layout, in the order data flows
//!
//! - [`model`]: what an event, a window and its resolutions, an alert, a late event and a dead
//!   letter are; parsing and validation of the JSON wire format. No I/O.
//! - [`generator`]: synthetic city traffic (the seed's producer), deterministic with a seed.
//! - [`broker`]: where events travel: the embedded in-process queue (default), Kafka, or JSON
//!   lines.
//! - [`processor`]: the engine (decode, per-partition watermarks, the seed's four queries) and
//!   the run loop that batches records into store writes.
//! - [`store`]: where results live, behind a trait per role (the processor's sink, the API's
//!   reader, maintenance): SQLite (default) or DynamoDB.
//! - [`delivery`]: the alert rules in force, and the dispatcher that sends the deliveries the
//!   store keeps in its outbox to the sinks (signed webhooks).
//! - [`api`]: the axum REST API and the dashboard, reading only from the store.
//! - [`config`] and [`app`]: typed flags and the wiring of each role (`up`, `produce`,
//!   `process`, `serve`, `init`, `destroy`, `bench`) used by the thin `main`.
//!
//! Dependencies point one way: everything uses `model`; only `app` sees every part.

pub mod api;
pub mod app;
pub mod broker;
pub mod config;
pub mod delivery;
pub mod generator;
pub mod model;
pub mod processor;
pub mod store;
