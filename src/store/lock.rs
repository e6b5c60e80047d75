//! One writer per source and data directory. The embedded broker and standard input number
//! their records from the store's checkpoints, so two processes writing the same one would
//! hand out the same offsets twice; a second one is refused instead. The lock is an advisory
//! file lock (`flock`) on `<data-dir>/locks/<source hash>.lock`: the kernel releases it when
//! the process dies, however it dies. Kafka processors take none: their group hands each
//! partition to one of them.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::{Fault, StoreError};

/// Held while a process writes a source; released on drop or exit.
#[derive(Debug)]
pub struct SourceLock {
    _file: File,
}

/// Takes the lock of `source` under `data_dir`, or says who holds it.
pub fn lock_source(data_dir: &Path, source: &str) -> Result<SourceLock, StoreError> {
    let dir = data_dir.join("locks");
    let io = |source: std::io::Error| {
        StoreError::caused(
            Fault::Down,
            format!("creating the lock under {}", dir.display()),
            source,
        )
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let path = dir.join(format!(
        "{:016x}.lock",
        xxhash_rust::xxh3::xxh3_64(source.as_bytes())
    ));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(StoreError::new(
                Fault::Fenced,
                format!(
                    "{} is in use by another process writing the same source ({source}): {} \
                     holds {}; run one such process at a time",
                    data_dir.display(),
                    holder.trim(),
                    path.display()
                ),
            ));
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    let note = format!("pid {} ({source})\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(note.as_bytes()))
        .map_err(io)?;
    Ok(SourceLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_of_a_source_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_source(dir.path(), "stdin").unwrap();
        let refused = lock_source(dir.path(), "stdin").unwrap_err().to_string();
        assert!(
            refused.contains("another process writing the same source (stdin)"),
            "{refused}"
        );
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        let other = lock_source(dir.path(), "city-events");
        assert!(other.is_ok(), "other sources are not locked");
        drop(first);
        assert!(lock_source(dir.path(), "stdin").is_ok());
    }
}
