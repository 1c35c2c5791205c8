//! The one behavioural suite every [`Storage`] implementation must pass
//! (the pattern of openraft's `testing::log::Suite`).
//!
//! Call [`run_all`] with a factory that returns a fresh, empty store; each
//! check gets its own store. Checks panic on failure, as tests do.

use super::{Batch, Precondition, Storage, StorageError};

/// Runs every check against stores made by `fresh`.
pub fn run_all<S: Storage>(mut fresh: impl FnMut() -> S) {
    get_absent_is_none(&fresh());
    put_then_get(&fresh());
    put_overwrites(&fresh());
    delete_removes_and_absent_delete_is_ok(&fresh());
    scan_is_ordered_and_prefix_bounded(&fresh());
    scan_paginates(&fresh());
    scan_handles_binary_keys(&fresh());
    batch_is_atomic(&fresh());
    preconditions_gate_the_whole_batch(&fresh());
    precondition_equals_compares_value(&fresh());
    empty_values_are_values(&fresh());
}

pub fn get_absent_is_none(s: &impl Storage) {
    assert_eq!(s.get(b"nope").expect("get"), None);
}

pub fn put_then_get(s: &impl Storage) {
    super::wait(s.put(b"k", b"v")).expect("put");
    assert_eq!(s.get(b"k").expect("get").as_deref(), Some(&b"v"[..]));
}

pub fn put_overwrites(s: &impl Storage) {
    super::wait(s.put(b"k", b"one")).expect("put");
    super::wait(s.put(b"k", b"two")).expect("put");
    assert_eq!(s.get(b"k").expect("get").as_deref(), Some(&b"two"[..]));
}

pub fn delete_removes_and_absent_delete_is_ok(s: &impl Storage) {
    super::wait(s.put(b"k", b"v")).expect("put");
    super::wait(s.delete(b"k")).expect("delete");
    assert_eq!(s.get(b"k").expect("get"), None);
    super::wait(s.delete(b"never-there")).expect("deleting an absent key is fine");
}

pub fn scan_is_ordered_and_prefix_bounded(s: &impl Storage) {
    for k in ["b/2", "a/1", "b/1", "b/10", "c/1", "b", "b0"] {
        super::wait(s.put(k.as_bytes(), k.as_bytes())).expect("put");
    }
    let keys: Vec<String> = s
        .scan_prefix(b"b/", None, usize::MAX)
        .expect("scan")
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(k, v, "scan returns each key's own value");
            String::from_utf8(k).expect("utf8")
        })
        .collect();
    assert_eq!(keys, ["b/1", "b/10", "b/2"]);
    assert!(s.scan_prefix(b"zzz", None, 10).expect("scan").is_empty());
    let all = s.scan_prefix(b"", None, usize::MAX).expect("scan all");
    assert_eq!(all.len(), 7);
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "full scan is sorted"
    );
}

pub fn scan_paginates(s: &impl Storage) {
    for i in 0..25u32 {
        super::wait(s.put(format!("p/{i:03}").as_bytes(), b"x")).expect("put");
    }
    let mut seen = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = s.scan_prefix(b"p/", after.as_deref(), 10).expect("scan");
        assert!(page.len() <= 10);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|(k, _)| k.clone());
        seen.extend(page.into_iter().map(|(k, _)| k));
    }
    let want: Vec<Vec<u8>> = (0..25u32)
        .map(|i| format!("p/{i:03}").into_bytes())
        .collect();
    assert_eq!(seen, want);
    assert_eq!(s.scan_prefix(b"p/", None, 0).expect("scan").len(), 0);
}

pub fn scan_handles_binary_keys(s: &impl Storage) {
    let keys: [&[u8]; 4] = [
        &[0x01, 0xff],
        &[0x01, 0xff, 0x00],
        &[0x01, 0xff, 0xff],
        &[0x02],
    ];
    for k in keys {
        super::wait(s.put(k, b"v")).expect("put");
    }
    let got: Vec<Vec<u8>> = s
        .scan_prefix(&[0x01, 0xff], None, usize::MAX)
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        got,
        vec![keys[0].to_vec(), keys[1].to_vec(), keys[2].to_vec()]
    );
}

pub fn batch_is_atomic(s: &impl Storage) {
    super::wait(s.put(b"gone", b"soon")).expect("put");
    super::wait(s.apply(Batch::new().put("x", "1").put("y", "2").delete("gone"))).expect("batch");
    assert_eq!(s.get(b"x").expect("get").as_deref(), Some(&b"1"[..]));
    assert_eq!(s.get(b"y").expect("get").as_deref(), Some(&b"2"[..]));
    assert_eq!(s.get(b"gone").expect("get"), None);
    // Later ops in one batch win over earlier ones on the same key.
    super::wait(s.apply(Batch::new().put("z", "first").put("z", "second"))).expect("batch");
    assert_eq!(s.get(b"z").expect("get").as_deref(), Some(&b"second"[..]));
}

pub fn preconditions_gate_the_whole_batch(s: &impl Storage) {
    super::wait(s.put(b"exists", b"v")).expect("put");
    let err = super::wait(
        s.apply(
            Batch::new()
                .require("exists", Precondition::Absent)
                .put("a", "1")
                .delete("exists"),
        ),
    )
    .expect_err("Absent on a present key must fail");
    assert!(matches!(err, StorageError::PreconditionFailed { ref key } if key == "exists"));
    assert!(!err.is_fatal());
    assert_eq!(s.get(b"a").expect("get"), None, "nothing applied");
    assert!(s.get(b"exists").expect("get").is_some(), "nothing applied");

    let err = super::wait(
        s.apply(
            Batch::new()
                .require("missing", Precondition::Present)
                .put("a", "1"),
        ),
    )
    .expect_err("Present on an absent key must fail");
    assert!(matches!(err, StorageError::PreconditionFailed { .. }));
    assert_eq!(s.get(b"a").expect("get"), None);

    super::wait(
        s.apply(
            Batch::new()
                .require("missing", Precondition::Absent)
                .require("exists", Precondition::Present)
                .put("a", "1"),
        ),
    )
    .expect("all preconditions hold");
    assert_eq!(s.get(b"a").expect("get").as_deref(), Some(&b"1"[..]));
}

pub fn precondition_equals_compares_value(s: &impl Storage) {
    super::wait(s.put(b"cas", b"v1")).expect("put");
    let err = super::wait(
        s.apply(
            Batch::new()
                .require("cas", Precondition::Equals(b"v0".to_vec()))
                .put("cas", "v2"),
        ),
    )
    .expect_err("stale value");
    assert!(matches!(err, StorageError::PreconditionFailed { .. }));
    assert_eq!(s.get(b"cas").expect("get").as_deref(), Some(&b"v1"[..]));
    super::wait(
        s.apply(
            Batch::new()
                .require("cas", Precondition::Equals(b"v1".to_vec()))
                .put("cas", "v2"),
        ),
    )
    .expect("current value");
    assert_eq!(s.get(b"cas").expect("get").as_deref(), Some(&b"v2"[..]));
    let err = super::wait(
        s.apply(
            Batch::new()
                .require("none", Precondition::Equals(Vec::new()))
                .put("none", "x"),
        ),
    )
    .expect_err("Equals(empty) does not match an absent key");
    assert!(matches!(err, StorageError::PreconditionFailed { .. }));
}

pub fn empty_values_are_values(s: &impl Storage) {
    super::wait(s.put(b"empty", b"")).expect("put");
    assert_eq!(s.get(b"empty").expect("get"), Some(Vec::new()));
    super::wait(s.apply(Batch::new().require("empty", Precondition::Present)))
        .expect("an empty value is present");
}
