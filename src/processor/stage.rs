//! The engine beside the run loop: a poll's records are processed on rayon's pool while the
//! loop reads the next poll and finishes the write before it, so that reading, processing and
//! the bookkeeping of writes keep both cores busy.
//!
//! Polls are processed one at a time and in the order they were read, by the one engine, so
//! this changes when the work is done, never what it gives. A small poll (what a stream of a
//! few thousand events a second brings) is processed on the loop's thread: handing it over
//! would cost more than it saves, and its memory would be taken on the pool's threads and
//! given back on others, which grows glibc's arenas (`up`'s RSS by 5 MiB).

use std::panic::AssertUnwindSafe;

use tokio::sync::oneshot;

use super::engine::{DECODE_IN_PARALLEL, Engine};
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

    /// Waits for the poll before, then processes `records`: a large poll on rayon's pool (the
    /// next [`ready`](Self::ready) waits for it), a small one here.
    pub async fn start(&mut self, records: Vec<Record>, now: EventTime) -> Result<(), EngineLost> {
        let stage = self.ready().await?;
        if records.len() < DECODE_IN_PARALLEL {
            stage.engine.process(records, now, &mut stage.batch);
            return Ok(());
        }
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::generator::{Generator, GeneratorConfig};
    use crate::processor::EngineConfig;

    /// Polls of every size through the stage, some on the pool and some here, give what the
    /// engine gives when it is handed them itself.
    #[tokio::test]
    async fn polls_through_the_stage_give_what_the_engine_gives() {
        let config = GeneratorConfig {
            seed: 3,
            rate: 1_000.0,
            count: Some(6_000),
            start: EventTime::from_millis(1_795_680_000_000),
            out_of_order: 0.05,
            late: 0.01,
            ..GeneratorConfig::default()
        };
        let records: Vec<Record> = Generator::new(config)
            .enumerate()
            .map(|(i, e)| Record::new(0, i as u64, None, Bytes::from(e.to_json())))
            .collect();
        let now = EventTime::from_millis(1_795_680_600_000);
        let mut stage = EngineStage::new(Engine::new("t", EngineConfig::default()));
        let mut direct = Engine::new("t", EngineConfig::default());
        let mut expected = direct.batch();
        let mut polls = records.as_slice();
        for size in [1, 2_500, 40, 1_024, 1_023, 1_500].into_iter().cycle() {
            if polls.is_empty() {
                break;
            }
            let (poll, rest) = polls.split_at(size.min(polls.len()));
            polls = rest;
            direct.process(poll.to_vec(), now, &mut expected);
            stage.start(poll.to_vec(), now).await.expect("not lost");
        }
        direct.flush(&mut expected);
        let got = stage.ready().await.expect("not lost");
        got.engine.flush(&mut got.batch);
        assert!(expected.events.len() > 5_000, "{}", expected.events.len());
        assert!(expected.late().count() > 0, "late events too");
        assert_eq!(got.batch, expected);
        assert_eq!(got.engine.counters(), direct.counters());
    }
}
