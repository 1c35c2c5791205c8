//! The snapshot file: a RocksDB checkpoint of the state database packed
//! into one stream, with a SHA-256 trailer that is verified before anything
//! is unpacked or installed.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! "SIGILSNP" (8) || version u32 (= 1)
//! { name_len u16 (> 0) || name || size u64 || bytes }*   one per checkpoint file
//! 0u16                                                    end of files
//! sha256 (32) of everything above
//! ```
//!
//! A checkpoint is taken with hard links, so building a snapshot does not
//! stop writes; the packed file is what is streamed to a follower or saved by
//! `sys/storage/raft/snapshot`. Everything in it is what the barrier wrote:
//! ciphertext, wrapped keys and the non-secret seal configuration.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;

const MAGIC: &[u8; 8] = b"SIGILSNP";
const VERSION: u32 = 1;
const TRAILER: u64 = 32;
/// RocksDB file names are short; anything longer is not ours.
const MAX_NAME: usize = 255;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("snapshot i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("snapshot checksum mismatch: the file is corrupt or truncated")]
    Checksum,
    #[error("snapshot is malformed: {0}")]
    Malformed(String),
}

/// A packed snapshot on disk. When `temporary`, the file is removed when
/// this value is dropped (copies handed to the network, received uploads).
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub size: u64,
    temporary: bool,
}

impl SnapshotFile {
    /// A file that stays when this value is dropped.
    pub fn kept(path: PathBuf, size: u64) -> Self {
        Self {
            path,
            size,
            temporary: false,
        }
    }

    /// A file removed when this value is dropped.
    pub fn temporary(path: PathBuf, size: u64) -> Self {
        Self {
            path,
            size,
            temporary: true,
        }
    }

    /// Keeps the file past this value's life (after it was moved into place).
    pub fn keep(mut self) -> PathBuf {
        self.temporary = false;
        std::mem::take(&mut self.path)
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if self.temporary && !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Packs every regular file of the checkpoint at `dir` into `out`. Returns
/// the packed size.
pub fn pack(dir: &Path, out: &Path) -> Result<u64, SnapshotError> {
    let mut names: Vec<String> = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        if item.file_type()?.is_file() {
            let name = item.file_name().into_string().map_err(|n| {
                SnapshotError::Malformed(format!("checkpoint file name {n:?} is not UTF-8"))
            })?;
            names.push(name);
        }
    }
    names.sort();
    let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 20, File::create(out)?));
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_be_bytes())?;
    let mut buf = vec![0u8; 1 << 20];
    for name in &names {
        let mut f = File::open(dir.join(name))?;
        let size = f.metadata()?.len();
        let len = u16::try_from(name.len())
            .map_err(|_| SnapshotError::Malformed(format!("file name {name:?} too long")))?;
        w.write_all(&len.to_be_bytes())?;
        w.write_all(name.as_bytes())?;
        w.write_all(&size.to_be_bytes())?;
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            f.read_exact(&mut buf[..want])?;
            w.write_all(&buf[..want])?;
            left -= want as u64;
        }
    }
    w.write_all(&0u16.to_be_bytes())?;
    let (mut inner, sum, written) = w.finish();
    inner.write_all(sum.as_ref())?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(written + TRAILER)
}

/// Checks the trailer of the packed file at `path` without unpacking it.
pub fn verify(path: &Path) -> Result<(), SnapshotError> {
    let len = std::fs::metadata(path)?.len();
    if len < MAGIC.len() as u64 + 4 + 2 + TRAILER {
        return Err(SnapshotError::Malformed(format!(
            "{len} bytes is too short"
        )));
    }
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut left = len - TRAILER;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        r.read_exact(&mut buf[..want])?;
        ctx.update(&buf[..want]);
        left -= want as u64;
    }
    let mut trailer = [0u8; TRAILER as usize];
    r.read_exact(&mut trailer)?;
    if ctx.finish().as_ref() != trailer {
        return Err(SnapshotError::Checksum);
    }
    Ok(())
}

/// Verifies the packed file at `path`, then unpacks it into the new
/// directory `dest`.
pub fn unpack(path: &Path, dest: &Path) -> Result<(), SnapshotError> {
    verify(path)?;
    let len = std::fs::metadata(path)?.len();
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?).take(len - TRAILER);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(SnapshotError::Malformed("not a Sigil snapshot".into()));
    }
    let mut word = [0u8; 4];
    r.read_exact(&mut word)?;
    let version = u32::from_be_bytes(word);
    if version != VERSION {
        return Err(SnapshotError::Malformed(format!(
            "snapshot format version {version}, this node reads {VERSION}"
        )));
    }
    std::fs::create_dir(dest)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut two = [0u8; 2];
        r.read_exact(&mut two)?;
        let name_len = usize::from(u16::from_be_bytes(two));
        if name_len == 0 {
            break;
        }
        if name_len > MAX_NAME {
            return Err(SnapshotError::Malformed(format!(
                "file name of {name_len} bytes"
            )));
        }
        let mut name = vec![0u8; name_len];
        r.read_exact(&mut name)?;
        let name = String::from_utf8(name)
            .map_err(|_| SnapshotError::Malformed("file name is not UTF-8".into()))?;
        if name.contains('/') || name.contains('\\') || name == "." || name == ".." {
            return Err(SnapshotError::Malformed(format!("file name {name:?}")));
        }
        let mut eight = [0u8; 8];
        r.read_exact(&mut eight)?;
        let mut left = u64::from_be_bytes(eight);
        let mut out = BufWriter::new(File::create(dest.join(&name))?);
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            r.read_exact(&mut buf[..want])?;
            out.write_all(&buf[..want])?;
            left -= want as u64;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    Ok(())
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    ctx: digest::Context,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            ctx: digest::Context::new(&digest::SHA256),
            written: 0,
        }
    }

    fn finish(self) -> (W, digest::Digest, u64) {
        (self.inner, self.ctx.finish(), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.ctx.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join("000001.sst"), vec![7u8; 3 << 20]).expect("write");
        std::fs::write(dir.join("CURRENT"), b"MANIFEST-000001\n").expect("write");
        std::fs::write(dir.join("empty"), b"").expect("write");
    }

    #[test]
    fn pack_verify_unpack_round_trips() {
        let tmp = tempfile::tempdir().expect("tmp");
        let src = tmp.path().join("cp");
        sample(&src);
        let snap = tmp.path().join("s.snap");
        let size = pack(&src, &snap).expect("pack");
        assert_eq!(size, std::fs::metadata(&snap).expect("meta").len());
        verify(&snap).expect("verify");
        let dest = tmp.path().join("out");
        unpack(&snap, &dest).expect("unpack");
        for name in ["000001.sst", "CURRENT", "empty"] {
            assert_eq!(
                std::fs::read(src.join(name)).expect("src"),
                std::fs::read(dest.join(name)).expect("dest"),
                "{name}"
            );
        }
    }

    #[test]
    fn any_flipped_byte_is_caught_before_unpacking() {
        let tmp = tempfile::tempdir().expect("tmp");
        let src = tmp.path().join("cp");
        sample(&src);
        let snap = tmp.path().join("s.snap");
        pack(&src, &snap).expect("pack");
        let good = std::fs::read(&snap).expect("read");
        for pos in [0, 9, 20, good.len() / 2, good.len() - 40, good.len() - 1] {
            let mut bad = good.clone();
            bad[pos] ^= 0x01;
            std::fs::write(&snap, &bad).expect("write");
            assert!(
                matches!(verify(&snap), Err(SnapshotError::Checksum)),
                "byte {pos}"
            );
            let dest = tmp.path().join(format!("out-{pos}"));
            assert!(unpack(&snap, &dest).is_err());
            assert!(!dest.exists(), "nothing unpacked for byte {pos}");
        }
        std::fs::write(&snap, &good[..good.len() - 5]).expect("truncate");
        assert!(verify(&snap).is_err());
    }

    #[test]
    fn temporary_files_go_away_and_kept_files_stay() {
        let tmp = tempfile::tempdir().expect("tmp");
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        std::fs::write(&a, b"x").expect("write");
        std::fs::write(&b, b"x").expect("write");
        drop(SnapshotFile::temporary(a.clone(), 1));
        drop(SnapshotFile::kept(b.clone(), 1));
        assert!(!a.exists());
        assert!(b.exists());
        let c = SnapshotFile::temporary(b.clone(), 1).keep();
        assert!(c.exists());
    }
}
