//! A file as a stream of byte pieces, for bodies too large to hold in
//! memory (snapshots, both ways).

use std::path::PathBuf;

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
    async fn a_missing_file_is_an_error_item() {
        let pieces: Vec<_> = super::read_file("/nonexistent/sigil".into(), ())
            .collect()
            .await;
        assert_eq!(pieces.len(), 1);
        assert!(pieces[0].is_err());
    }
}
