//! Files as streams of byte pieces and back, for bodies too large to hold
//! in memory (snapshots, both ways).

use std::path::{Path, PathBuf};

/// Size of each piece read.
const PIECE: usize = 256 << 10;

/// Reads the file at `path` piece by piece, opening it on first poll, and
/// holds `keep` until the stream ends or is dropped (a temporary file's
/// guard, say, so the file outlives the transfer).
pub fn read_file<K: Send + 'static>(
    path: PathBuf,
    keep: K,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures::stream::unfold(
        Some((path, None::<tokio::fs::File>, keep)),
        |state| async move {
            use tokio::io::AsyncReadExt;
            let (path, file, keep) = state?;
            let mut file = match file {
                Some(f) => f,
                None => match tokio::fs::File::open(&path).await {
                    Ok(f) => f,
                    Err(e) => return Some((Err(e), None)),
                },
            };
            let mut buf = vec![0u8; PIECE];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(bytes::Bytes::from(buf)), Some((path, Some(file), keep))))
                }
                Err(e) => Some((Err(e), None)),
            }
        },
    )
}

/// Why [`write_file`] stopped.
#[derive(Debug)]
pub enum CopyError<E> {
    /// The stream failed (an upload or download was cut off).
    Source(E),
    /// The file could not be written.
    Io(std::io::Error),
}

/// Writes every piece of `stream` to a new file at `path` and syncs it.
/// Returns the bytes written.
pub async fn write_file<E>(
    stream: impl futures::Stream<Item = Result<bytes::Bytes, E>>,
    path: &Path,
) -> Result<u64, CopyError<E>> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut stream = std::pin::pin!(stream);
    let mut file = tokio::fs::File::create(path).await.map_err(CopyError::Io)?;
    let mut written = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(CopyError::Source)?;
        file.write_all(&piece).await.map_err(CopyError::Io)?;
        written += piece.len() as u64;
    }
    file.sync_all().await.map_err(CopyError::Io)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    #[tokio::test]
    async fn streams_the_whole_file_then_drops_the_guard() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let content: Vec<u8> = (0..(super::PIECE * 2 + 17)).map(|i| i as u8).collect();
        std::fs::write(&path, &content).expect("write");
        let guard = std::sync::Arc::new(());
        let pieces: Vec<_> = super::read_file(path, guard.clone()).collect().await;
        assert_eq!(pieces.len(), 3);
        let joined: Vec<u8> = pieces
            .into_iter()
            .flat_map(|p| p.expect("piece").to_vec())
            .collect();
        assert_eq!(joined, content);
        assert_eq!(
            std::sync::Arc::strong_count(&guard),
            1,
            "the guard was dropped"
        );
    }

    #[tokio::test]
    async fn a_stream_written_out_reads_back_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        let content: Vec<u8> = (0..(super::PIECE + 5)).map(|i| (i * 7) as u8).collect();
        std::fs::write(&from, &content).expect("write");
        let n = super::write_file(super::read_file(from, ()), &to)
            .await
            .expect("copy");
        assert_eq!(n, content.len() as u64);
        assert_eq!(std::fs::read(&to).expect("read"), content);
        let failing = futures::stream::iter([Ok(bytes::Bytes::from_static(b"ab")), Err("cut off")]);
        assert!(matches!(
            super::write_file(failing, &dir.path().join("x")).await,
            Err(super::CopyError::Source("cut off"))
        ));
    }

    #[tokio::test]
    async fn a_missing_file_is_an_error_item() {
        let pieces: Vec<_> = super::read_file("/nonexistent/sigil".into(), ())
            .collect()
            .await;
        assert_eq!(pieces.len(), 1);
        assert!(pieces[0].is_err());
    }
}
