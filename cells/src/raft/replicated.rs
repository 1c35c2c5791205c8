//! The [`Storage`] a cell node's barrier runs on: reads come from this
//! node's applied state; writes are Raft proposals, resolved once committed
//! and applied here (so a write is visible to this node's reads as soon as
//! it returns).

use crate::storage::{Batch, Entry, Storage, StorageError, WriteFuture};

use super::CommandResult;
use super::cell::{CellError, RaftCell};

#[derive(Debug, Clone)]
pub struct ReplicatedStorage {
    cell: RaftCell,
}

impl ReplicatedStorage {
    pub fn new(cell: RaftCell) -> Self {
        Self { cell }
    }

    pub fn cell(&self) -> &RaftCell {
        &self.cell
    }
}

impl Storage for ReplicatedStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.cell.state_machine().get(key)
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        self.cell
            .state_machine()
            .db()
            .scan_prefix(prefix, start_after, limit)
    }

    fn apply(&self, batch: Batch) -> WriteFuture<'_> {
        Box::pin(async move {
            if batch.ops.is_empty() && batch.preconditions.is_empty() {
                return Ok(());
            }
            match self.cell.propose(batch).await {
                Ok((CommandResult::Applied | CommandResult::Duplicate, _)) => Ok(()),
                Ok((CommandResult::PreconditionFailed { key }, _)) => {
                    Err(StorageError::PreconditionFailed { key })
                }
                Err(e @ (CellError::NoLeader(_) | CellError::Lagging { .. })) => {
                    Err(StorageError::Unavailable(e.to_string()))
                }
                Err(e) => Err(StorageError::Io(e.to_string())),
            }
        })
    }
}
