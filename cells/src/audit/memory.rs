//! An in-memory [`Sink`] for tests: keeps lines, and can be told to fail or
//! to hang, to stand in for a broken or blocked device.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use super::device::Sink;

/// How the next writes behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryMode {
    #[default]
    Accept,
    Fail,
    /// Never completes, like a device stuck in a write.
    Hang,
}

#[derive(Debug, Default)]
struct Shared {
    lines: Vec<Vec<u8>>,
    mode: MemoryMode,
}

/// A sink that keeps every line; clones share the lines.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    shared: Arc<Mutex<Shared>>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// The lines written so far, newlines included.
    pub fn lines(&self) -> Vec<Vec<u8>> {
        self.lock().lines.clone()
    }

    /// All lines as one buffer, as a file would hold them.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().lines.concat()
    }

    pub fn set_mode(&self, mode: MemoryMode) {
        self.lock().mode = mode;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sink for MemorySink {
    async fn write_line(&mut self, line: Vec<u8>) -> io::Result<()> {
        let mode = {
            let mut shared = self.lock();
            if shared.mode == MemoryMode::Accept {
                shared.lines.push(line);
            }
            shared.mode
        };
        match mode {
            MemoryMode::Accept => Ok(()),
            MemoryMode::Fail => Err(io::Error::other("memory sink set to fail")),
            MemoryMode::Hang => std::future::pending().await,
        }
    }

    async fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}
