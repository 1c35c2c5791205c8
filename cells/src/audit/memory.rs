//! An in-memory [`Sink`] for tests: keeps lines, and can be told to fail or
//! to hang, to stand in for a broken or blocked device.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::device::Sink;

/// How the next writes behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryMode {
    #[default]
    Accept,
    Fail,
    /// Does not complete until the mode changes, like a device stuck in a
    /// write.
    Hang,
}

/// A sink that keeps every line; clones share the lines and the mode.
#[derive(Debug, Clone)]
pub struct MemorySink {
    lines: Arc<Mutex<Vec<Vec<u8>>>>,
    mode: Arc<watch::Sender<MemoryMode>>,
}

impl Default for MemorySink {
    fn default() -> Self {
        Self {
            lines: Arc::default(),
            mode: Arc::new(watch::Sender::new(MemoryMode::Accept)),
        }
    }
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// The lines written so far, newlines included.
    pub fn lines(&self) -> Vec<Vec<u8>> {
        self.lock().clone()
    }

    /// All lines as one buffer, as a file would hold them.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().concat()
    }

    pub fn set_mode(&self, mode: MemoryMode) {
        self.mode.send_replace(mode);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sink for MemorySink {
    async fn write_line(&mut self, line: Vec<u8>) -> io::Result<()> {
        let mut mode = self.mode.subscribe();
        loop {
            let now = *mode.borrow_and_update();
            match now {
                MemoryMode::Accept => {
                    self.lock().push(line);
                    return Ok(());
                }
                MemoryMode::Fail => return Err(io::Error::other("memory sink set to fail")),
                MemoryMode::Hang => {
                    if mode.changed().await.is_err() {
                        return Err(io::Error::other("memory sink dropped"));
                    }
                }
            }
        }
    }

    async fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}
