//! The rules in force: loaded from `--rules` (or the default), with the sinks of `--webhook`,
//! and replaced whole without a restart: on SIGHUP, when the file changes (checked every
//! [`WATCH_EVERY`]), or by `PUT /api/v1/rules`, which writes the file. A file that does not
//! validate is refused with the reason and the rules in force stay.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::model::Span;
use crate::model::alerting::{Alerting, MAX_RULES_FILE_BYTES, RulesError, SinkConfig};

/// How often the rules file's modification time is looked at.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Why rules could not be loaded or replaced.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] RulesError),
    #[error("no rules file was given (--rules): the rules cannot be replaced at run time")]
    NoFile,
}

/// The rules in force, and where they come from.
pub struct Rules {
    file: Option<PathBuf>,
    /// Sinks from the command line, added to the file's.
    extra: Vec<SinkConfig>,
    /// The resolutions kept: a window rule counts windows of one of them.
    kept: Vec<Span>,
    tx: watch::Sender<Arc<Alerting>>,
    /// The file's modification time and length when it was last read.
    seen: Mutex<Option<(SystemTime, u64)>>,
}

impl Rules {
    /// Loads `file` (the default rules without one) and adds `extra` sinks; a window rule must
    /// count windows of a resolution in `kept`.
    pub fn load(
        file: Option<PathBuf>,
        extra: Vec<SinkConfig>,
        kept: Vec<Span>,
    ) -> Result<Rules, ReloadError> {
        let rules = Rules {
            tx: watch::Sender::new(Arc::default()),
            seen: Mutex::new(file.as_deref().and_then(stamp)),
            file,
            extra,
            kept,
        };
        let first = rules.read()?;
        rules.tx.send_replace(Arc::new(first));
        Ok(rules)
    }

    /// Rules that never change: no file, no reload.
    pub fn fixed(rules: Alerting) -> Rules {
        Rules {
            file: None,
            extra: Vec::new(),
            kept: Vec::new(),
            tx: watch::Sender::new(Arc::new(rules)),
            seen: Mutex::new(None),
        }
    }

    pub fn current(&self) -> Arc<Alerting> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Alerting>> {
        self.tx.subscribe()
    }

    /// Reads the file again and puts it in force, changed or not (so a sink disabled by a 410
    /// is tried again); returns whether it changed.
    pub fn reload(&self) -> Result<bool, ReloadError> {
        if let Some(file) = &self.file
            && let Ok(mut seen) = self.seen.lock()
        {
            *seen = stamp(file);
        }
        let rules = self.read()?;
        let changed = *self.current() != rules;
        self.tx.send_replace(Arc::new(rules));
        Ok(changed)
    }

    /// Validates `text` whole, writes it to the rules file (a new file renamed over the old)
    /// and puts it in force.
    pub fn replace(&self, text: &str) -> Result<Arc<Alerting>, ReloadError> {
        let file = self.file.as_ref().ok_or(ReloadError::NoFile)?;
        let rules = Alerting::parse(text)?.with_sinks(self.extra.clone())?;
        rules.check_windows(&self.kept)?;
        write_atomically(file, text).map_err(|source| ReloadError::Read {
            path: file.display().to_string(),
            source,
        })?;
        if let Ok(mut seen) = self.seen.lock() {
            *seen = stamp(file);
        }
        self.tx.send_replace(Arc::new(rules));
        Ok(self.current())
    }

    /// Reloads on SIGHUP and when the file changes, until `cancel`.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        let mut hangups = hangups();
        let mut tick = tokio::time::interval(WATCH_EVERY);
        loop {
            let asked = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = next_hangup(&mut hangups) => true,
                _ = tick.tick() => false,
            };
            if asked || self.file_changed() {
                match self.reload() {
                    Ok(changed) => tracing::info!(changed, "alert rules reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "alert rules refused; the rules in force stay")
                    }
                }
            }
        }
    }

    fn read(&self) -> Result<Alerting, ReloadError> {
        let base = match &self.file {
            None => Alerting::default(),
            Some(file) => Alerting::parse(&read_bounded(file)?)?,
        };
        let rules = base.with_sinks(self.extra.clone())?;
        rules.check_windows(&self.kept)?;
        Ok(rules)
    }

    fn file_changed(&self) -> bool {
        let Some(file) = &self.file else {
            return false;
        };
        self.seen.lock().is_ok_and(|seen| *seen != stamp(file))
    }
}

fn stamp(file: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read_bounded(file: &Path) -> Result<String, ReloadError> {
    let failed = |source| ReloadError::Read {
        path: file.display().to_string(),
        source,
    };
    let len = std::fs::metadata(file).map_err(failed)?.len();
    if len > MAX_RULES_FILE_BYTES as u64 {
        return Err(RulesError::TooLong(usize::try_from(len).unwrap_or(usize::MAX)).into());
    }
    std::fs::read_to_string(file).map_err(failed)
}

fn write_atomically(file: &Path, text: &str) -> std::io::Result<()> {
    let tmp = file.with_extension("toml.new");
    std::fs::write(&tmp, text)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, file)
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangups() -> Hangups {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangups {
    None
}

#[cfg(unix)]
async fn next_hangup(h: &mut Hangups) {
    match h {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_is_refused_and_the_rules_in_force_stay() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.toml");
        std::fs::write(&file, "[[rules]]\nid = \"a\"\nseverity = \"low\"\n").unwrap();
        let rules = Rules::load(Some(file.clone()), Vec::new(), Vec::new()).unwrap();
        assert_eq!(rules.current().rules[0].id, "a");
        let err = rules.replace("[[rules]]\nid = \"b\"\n").unwrap_err();
        assert!(err.to_string().contains("severity"), "{err}");
        assert_eq!(rules.current().rules[0].id, "a");
        rules
            .replace("[[rules]]\nid = \"b\"\nseverity = \"critical\"\n")
            .unwrap();
        assert_eq!(rules.current().rules[0].id, "b");
        let on_disk = std::fs::read_to_string(&file).unwrap();
        assert!(on_disk.contains("\"b\""));
        std::fs::write(&file, "not toml [").unwrap();
        assert!(rules.reload().is_err());
        assert_eq!(rules.current().rules[0].id, "b");
        assert!(matches!(
            Rules::load(None, Vec::new(), Vec::new())
                .unwrap()
                .replace(""),
            Err(ReloadError::NoFile)
        ));
    }
}
