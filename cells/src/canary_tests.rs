//! End-to-end check of the barrier's promise: after real use of a node's
//! storage, no file under the data directory holds a secret value or any key
//! material in plaintext (docs/threat-model.md, "A copy of the data
//! directory").

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use sigil_hsm::SecretBytes;

use crate::barrier::{Barrier, BarrierConfig};
use crate::seal::{InitParams, SealBackend, SealManager};
use crate::storage::{RocksStorage, Storage};

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_plaintext_secret_or_key_reaches_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let canary_text = format!("canary-{}", hex::encode(SecretBytes::random(24).expose()));
    let canary_bytes = SecretBytes::random(48);
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    {
        let rocks = RocksStorage::open(dir.path().join("state")).expect("open");
        let storage: Arc<dyn Storage> = Arc::new(rocks.clone());
        let barrier = Barrier::new(
            storage,
            BarrierConfig {
                auto_rotate_after: 1 << 30,
                // Checkpoint often so the keyring is rewritten several times.
                checkpoint_every: 64,
            },
        );
        let seal = SealManager::open(barrier.clone(), SealBackend::Shamir, None).expect("seal");
        let out = seal
            .init(InitParams {
                secret_shares: 5,
                secret_threshold: 3,
                ..InitParams::default()
            })
            .expect("init");
        for share in &out.keys[..3] {
            seal.unseal(share.clone()).expect("unseal");
        }
        assert!(!seal.is_sealed());
        crate::storage::wait(barrier.put("secret/canary-text", canary_text.as_bytes()))
            .expect("put");
        crate::storage::wait(barrier.put("secret/canary-bytes", canary_bytes.expose()))
            .expect("put");
        // Enough traffic to fill memtables, checkpoint the keyring and rotate.
        for i in 0..500 {
            crate::storage::wait(barrier.put(
                &format!("secret/filler/{i}"),
                format!("{canary_text}-{i}").as_bytes(),
            ))
            .expect("put");
        }
        crate::storage::wait(barrier.rotate()).expect("rotate");
        crate::storage::wait(barrier.put("secret/after-rotate", canary_text.as_bytes()))
            .expect("put");
        rocks.flush().expect("flush");

        needles.push(("canary text".into(), canary_text.clone().into_bytes()));
        needles.push(("canary bytes".into(), canary_bytes.expose().to_vec()));
        let root = barrier.root_key().expect("root key");
        needles.push(("root key".into(), root.expose().to_vec()));
        needles.push((
            "root key (hex)".into(),
            hex::encode(root.expose()).into_bytes(),
        ));
        for (i, k) in barrier.data_keys_for_tests().iter().enumerate() {
            needles.push((format!("data key {i}"), k.expose().to_vec()));
        }
        let kek = crate::shamir::combine(&out.keys[..3]).expect("combine");
        needles.push(("unseal key".into(), kek.expose().to_vec()));
        for (i, s) in out.keys.iter().enumerate() {
            needles.push((format!("share {i}"), s.expose().to_vec()));
            needles.push((
                format!("share {i} (base64)"),
                base64::engine::general_purpose::STANDARD
                    .encode(s.expose())
                    .into_bytes(),
            ));
        }
        needles.push((
            "root token".into(),
            out.root_token.expose().as_bytes().to_vec(),
        ));
        seal.seal().expect("seal");
    }
    let mut files = Vec::new();
    files_under(dir.path(), &mut files);
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".sst")),
        "flushed SST files present: {names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with(".log")),
        "WAL present: {names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("MANIFEST")),
        "MANIFEST present: {names:?}"
    );
    let mut scanned = 0usize;
    for file in &files {
        let bytes = std::fs::read(file).expect("read");
        scanned += bytes.len();
        for (what, needle) in &needles {
            assert!(
                !contains(&bytes, needle),
                "{what} found in plaintext in {}",
                file.display()
            );
        }
    }
    // The scan must have had something to look at: every canary write is in
    // there, as ciphertext.
    assert!(scanned > 500 * 40, "scanned only {scanned} bytes");
}
