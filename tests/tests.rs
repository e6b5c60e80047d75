//! CityStream's integration tests, one binary. Each module is one tier:
//!
//! - `engine_props`: property tests of the engine against a plain batch oracle;
//! - `store`: the store contract, one conformance suite run on SQLite and on DynamoDB;
//! - `api`: every endpoint through `app().oneshot()`, good and bad requests, the OpenAPI
//!   document, Swagger UI and the dashboard's files;
//! - `docs`: the reference docs the code writes (configuration, API) say what it does now;
//! - `ingest`: events over HTTP: every body shape, limit and key check, and acknowledged
//!   events through SIGKILLs and retries; the key store's contract;
//! - `delivery`: alert rules and their delivery to real receivers: signed, retried, sent again,
//!   the outbox's contract;
//! - `stream`: the live stream of a real `serve` process: latency, cost, resume, bounds;
//! - `e2e`: the real binary on free ports, checked against the oracle over HTTP;
//! - `kafka`: the same against a real Kafka-protocol broker, with processors killed;
//! - `dynamodb`: the DynamoDB tables against a DynamoDB-compatible server;
//! - `invariant`: hostile input and random SIGKILLs on every source and store, ending exactly
//!   as an uninterrupted run;
//! - `faults`: the store stalled, killed, locked and slowed, the broker restarted, the disk
//!   full, a second processor of one source, slow and idle HTTP clients.

mod support;

mod api;
mod delivery;
mod docs;
mod dynamodb;
mod e2e;
mod engine_props;
mod faults;
mod ingest;
mod invariant;
mod kafka;
mod store;
mod stream;
