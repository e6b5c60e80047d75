//! The engine beside the run loop: a poll's records are processed on rayon's pool while the
//! loop reads the next poll and finishes the write before it, so that reading, processing and
//! the bookkeeping of writes keep both cores busy.
//!
//! Polls are processed one at a time and in the order they were read, by the one engine, so
//! this changes when the work is done, never what it gives.

use std::panic::AssertUnwindSafe;

use tokio::sync::oneshot;

use super::engine::Engine;
use crate::model::{EventTime, Record, WriteBatch};

/// The engine and the batch it fills.
pub struct Stage {
    pub engine: Engine,
    pub batch: WriteBatch,
}

/// The engine, ready or processing a poll.
pub struct EngineStage(State);

enum State {
    Ready(Box<Stage>),
    Busy(oneshot::Receiver<Box<Stage>>),
    /// Processing panicked, and the engine's state went with it.
    Lost,
}

/// The engine panicked while processing a poll.
#[derive(Debug, thiserror::Error)]
#[error("the engine panicked while processing a poll")]
pub struct EngineLost;

impl EngineStage {
    pub fn new(engine: Engine) -> Self {
        let batch = engine.batch();
        EngineStage(State::Ready(Box::new(Stage { engine, batch })))
    }

    /// The engine and its batch, once the poll being processed is done.
    pub async fn ready(&mut self) -> Result<&mut Stage, EngineLost> {
        if let State::Busy(done) = &mut self.0 {
            self.0 = match done.await {
                Ok(stage) => State::Ready(stage),
                Err(_) => State::Lost,
            };
        }
        match &mut self.0 {
            State::Ready(stage) => Ok(stage),
            State::Busy(_) | State::Lost => Err(EngineLost),
        }
    }

    /// Waits for the poll before, then processes `records` on rayon's pool: the next
    /// [`ready`](Self::ready) waits for them.
    pub async fn start(&mut self, records: Vec<Record>, now: EventTime) -> Result<(), EngineLost> {
        self.ready().await?;
        let State::Ready(mut stage) = std::mem::replace(&mut self.0, State::Lost) else {
            return Err(EngineLost);
        };
        let (done, wait) = oneshot::channel();
        rayon::spawn(move || {
            let processed = std::panic::catch_unwind(AssertUnwindSafe(move || {
                stage.engine.process(records, now, &mut stage.batch);
                stage
            }));
            // A panic drops `done`, and `ready` reports the engine lost.
            if let Ok(stage) = processed {
                let _ = done.send(stage);
            }
        });
        self.0 = State::Busy(wait);
        Ok(())
    }
}
