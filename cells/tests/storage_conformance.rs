//! Every `Storage` implementation passes the same suite.

use sigil_cell::storage::{MemoryStorage, RocksStorage, Storage, conformance};

#[test]
fn memory_storage_conforms() {
    conformance::run_all(MemoryStorage::new);
}

#[test]
fn rocksdb_storage_conforms() {
    let dirs: std::cell::RefCell<Vec<tempfile::TempDir>> = Default::default();
    conformance::run_all(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = RocksStorage::open(dir.path()).expect("open rocksdb");
        dirs.borrow_mut().push(dir);
        s
    });
}

#[test]
fn rocksdb_writes_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = RocksStorage::open(dir.path()).expect("open");
        sigil_cell::storage::wait(s.put(b"durable", b"yes")).expect("put");
    }
    let s = RocksStorage::open(dir.path()).expect("reopen");
    assert_eq!(
        s.get(b"durable").expect("get").as_deref(),
        Some(&b"yes"[..])
    );
}
