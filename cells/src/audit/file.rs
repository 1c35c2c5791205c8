//! The `file` device: appends lines to a file, standard output, or nowhere
//! (docs/audit.md, "The file device").

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::device::{FileTarget, Sink};

/// Mode a new file is created with when `mode=0000` asks us not to manage
/// it: readable by the node's user only.
const CREATE_MODE: u32 = 0o600;

/// Appends each line with one `write` on an `O_APPEND` descriptor, so lines
/// from one device never interleave.
#[derive(Debug)]
pub struct FileSink {
    target: FileTarget,
    mode: Option<u32>,
    /// `None` only after a failed reopen or a lost blocking task; the next
    /// write opens the path again.
    file: Option<File>,
}

impl FileSink {
    /// Opens (creating if needed) the target now, so a path that cannot be
    /// opened fails the enable rather than the first request.
    pub fn open(target: FileTarget, mode: Option<u32>) -> io::Result<Self> {
        let file = match &target {
            FileTarget::Path(p) => Some(open_file(p, mode)?),
            FileTarget::Stdout | FileTarget::Discard => None,
        };
        Ok(Self { target, mode, file })
    }

    fn path(&self) -> Option<&PathBuf> {
        match &self.target {
            FileTarget::Path(p) => Some(p),
            FileTarget::Stdout | FileTarget::Discard => None,
        }
    }
}

/// `O_WRONLY|O_APPEND|O_CREAT`; a regular file then gets `mode` (as Vault
/// does, also when it already existed). FIFOs and devices keep theirs.
fn open_file(path: &Path, mode: Option<u32>) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode.unwrap_or(CREATE_MODE))
        .open(path)?;
    if let Some(mode) = mode
        && file.metadata()?.file_type().is_file()
    {
        file.set_permissions(Permissions::from_mode(mode))?;
    }
    Ok(file)
}

fn lost() -> io::Error {
    io::Error::other("audit file writer task was lost")
}

impl Sink for FileSink {
    async fn write_line(&mut self, line: Vec<u8>) -> io::Result<()> {
        match &self.target {
            FileTarget::Discard => Ok(()),
            FileTarget::Stdout => tokio::task::spawn_blocking(move || {
                let mut out = io::stdout().lock();
                out.write_all(&line)?;
                out.flush()
            })
            .await
            .map_err(|_| lost())?,
            FileTarget::Path(path) => {
                let file = match self.file.take() {
                    Some(f) => f,
                    None => open_file(path, self.mode)?,
                };
                // A file write can block (a full disk, a hung NFS server):
                // keep it off the async workers.
                let (file, result) = tokio::task::spawn_blocking(move || {
                    let mut file = file;
                    let result = file.write_all(&line);
                    (file, result)
                })
                .await
                .map_err(|_| lost())?;
                self.file = Some(file);
                result
            }
        }
    }

    async fn reopen(&mut self) -> io::Result<()> {
        let Some(path) = self.path().cloned() else {
            return Ok(());
        };
        let mode = self.mode;
        let file = tokio::task::spawn_blocking(move || open_file(&path, mode))
            .await
            .map_err(|_| lost())??;
        // Swapped only once the new file is open: if it cannot be, records
        // keep going to the old (perhaps renamed) one rather than nowhere.
        self.file = Some(file);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_with_mode_appends_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let mut sink = FileSink::open(FileTarget::Path(path.clone()), Some(0o640)).expect("open");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o7777, 0o640);
        sink.write_line(b"one\n".to_vec()).await.expect("write");
        let rotated = dir.path().join("audit.log.1");
        std::fs::rename(&path, &rotated).expect("rename");
        sink.write_line(b"two\n".to_vec()).await.expect("write");
        sink.reopen().await.expect("reopen");
        sink.write_line(b"three\n".to_vec()).await.expect("write");
        assert_eq!(std::fs::read(&rotated).expect("read"), b"one\ntwo\n");
        assert_eq!(std::fs::read(&path).expect("read"), b"three\n");
    }

    #[tokio::test]
    async fn mode_zero_leaves_an_existing_mode_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        std::fs::write(&path, b"").expect("create");
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");
        let _sink = FileSink::open(FileTarget::Path(path.clone()), None).expect("open");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o7777, 0o644);
    }

    #[tokio::test]
    async fn unopenable_path_fails_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing-dir").join("audit.log");
        assert!(FileSink::open(FileTarget::Path(path), Some(0o600)).is_err());
    }

    #[tokio::test]
    async fn discard_accepts_everything() {
        let mut sink = FileSink::open(FileTarget::Discard, None).expect("open");
        sink.write_line(b"x\n".to_vec()).await.expect("write");
        sink.reopen().await.expect("reopen");
    }
}
