//! PEM files of the cluster PKI: reading one certificate or key, encoding
//! (RFC 7468), and writing files atomically with the right mode.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use super::error::PkiError;

/// Mode of private key files: readable by the node's user only.
pub(super) const KEY_FILE_MODE: u32 = 0o600;
/// Mode of certificate files: public material.
pub(super) const CERT_FILE_MODE: u32 = 0o644;

/// RFC 7468 §2: lines of the base64 text hold at most 64 characters, which
/// is 48 bytes of input.
const BYTES_PER_LINE: usize = 48;

fn file_error(path: &Path, problem: impl Into<String>) -> PkiError {
    PkiError::File {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| file_error(path, format!("cannot read: {e}")))
}

/// The one certificate in a PEM file. A file with more than one is refused
/// rather than guessed at: the cluster trusts a single CA and a node
/// presents a single leaf.
pub(super) fn read_certificate(path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    let pem = read(path)?;
    let mut certs = CertificateDer::pem_slice_iter(&pem);
    let first = certs
        .next()
        .ok_or_else(|| file_error(path, "holds no PEM certificate"))?
        .map_err(|e| file_error(path, format!("bad PEM: {e}")))?;
    if certs.next().is_some() {
        return Err(file_error(
            path,
            "holds more than one certificate; expected exactly one",
        ));
    }
    Ok(first)
}

/// The private key in a PEM file (PKCS#8, SEC1 or PKCS#1).
pub(super) fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => file_error(path, "holds no PEM private key"),
        e => file_error(path, format!("bad PEM: {e}")),
    })
}

/// PEM text for `der`. Built in one buffer sized up front, so that for a
/// private key no reallocation leaves an unwiped copy behind.
pub(super) fn encode(label: &str, der: &[u8]) -> Zeroizing<String> {
    let lines = der.len().div_ceil(BYTES_PER_LINE);
    let capacity = 2 * (label.len() + 17) + lines * 65;
    let mut out = Zeroizing::new(String::with_capacity(capacity));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in der.chunks(BYTES_PER_LINE) {
        base64::engine::general_purpose::STANDARD.encode_string(line, &mut out);
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Whether replacing an existing file is expected (a renewed node
/// certificate) or a mistake (a second CA over the first would orphan every
/// certificate it issued).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overwrite {
    Allow,
    Refuse,
}

/// Writes `contents` to `dir/name` through a temporary file in the same
/// directory, so a reader never sees half a file and a key file never
/// exists with a wider mode than `mode`.
pub(super) fn write_file(
    dir: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
    overwrite: Overwrite,
) -> Result<PathBuf, PkiError> {
    let path = dir.join(name);
    let fail = |source| PkiError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    // NamedTempFile creates its file with mode 0600, so the key is never
    // world-readable, even for a moment.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.write_all(contents).map_err(fail)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    let persisted = match overwrite {
        Overwrite::Allow => tmp.persist(&path),
        Overwrite::Refuse => tmp.persist_noclobber(&path),
    };
    persisted.map_err(|e| fail(e.error))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_wraps_at_64() {
        for len in [0, 1, 47, 48, 49, 96, 1000] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let pem = encode("CERTIFICATE", &der);
            assert!(pem.lines().all(|l| l.len() <= 64), "{len}");
            if len > 0 {
                let back = CertificateDer::from_pem_slice(pem.as_bytes()).expect("parse");
                assert_eq!(back.as_ref(), der.as_slice(), "{len}");
            }
        }
    }

    #[test]
    fn refused_overwrite_keeps_the_original() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_file(dir.path(), "k", b"one", KEY_FILE_MODE, Overwrite::Refuse).expect("first");
        let err = write_file(dir.path(), "k", b"two", KEY_FILE_MODE, Overwrite::Refuse)
            .expect_err("second");
        assert!(matches!(err, PkiError::Write { .. }), "{err}");
        assert_eq!(std::fs::read(dir.path().join("k")).expect("read"), b"one");
        write_file(dir.path(), "k", b"three", CERT_FILE_MODE, Overwrite::Allow).expect("replace");
        assert_eq!(std::fs::read(dir.path().join("k")).expect("read"), b"three");
    }
}
