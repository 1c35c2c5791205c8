use serde_json::{Value, json};

use super::*;
use crate::engines::testing::{Harness, data};
use crate::logical::Outcome;

fn v2() -> (Harness, KvEngine) {
    (
        Harness::new("secret/", "kv", &[("version", "2")]),
        KvEngine::new(),
    )
}

fn request(op: Operation, path: &str, body: Value) -> Request {
    let mut req = Request::new(op, format!("secret/{path}")).with_data(data(body));
    if op == Operation::Patch {
        req.content_type = Some("application/merge-patch+json".into());
    }
    req
}

async fn call(
    h: &Harness,
    e: &KvEngine,
    op: Operation,
    path: &str,
    body: Value,
) -> Result<Response, ApiError> {
    h.run(e, path, &request(op, path, body)).await
}

async fn call_at(
    h: &Harness,
    e: &KvEngine,
    op: Operation,
    path: &str,
    body: Value,
    later_secs: i64,
) -> Result<Response, ApiError> {
    h.run_at(e, path, &request(op, path, body), later_secs)
        .await
}

fn body(resp: Response) -> Value {
    Value::Object(resp.data.expect("response has data"))
}

/// A 400: bad input, or a check-and-set precondition that did not hold
/// (also 400 over HTTP, FAILED_PRECONDITION over gRPC).
fn bad_request(res: Result<Response, ApiError>) -> String {
    match res {
        Err(ApiError::InvalidRequest(m) | ApiError::CheckAndSet(m)) => m,
        other => panic!("expected a 400, got {other:?}"),
    }
}

fn is_not_found(res: &Result<Response, ApiError>) -> bool {
    matches!(res, Err(ApiError::NotFound(_)))
}

/// A 404 that carries a body: returns the body.
fn not_found_body(res: Result<Response, ApiError>) -> Value {
    match res {
        Ok(r) if r.outcome == Outcome::NotFound => body(r),
        other => panic!("expected a 404 with a body, got {other:?}"),
    }
}

async fn put(h: &Harness, e: &KvEngine, key: &str, secret: Value) -> Value {
    body(
        call(
            h,
            e,
            Operation::Update,
            &format!("data/{key}"),
            json!({"data": secret}),
        )
        .await
        .expect("ok"),
    )
}

async fn get(h: &Harness, e: &KvEngine, key: &str) -> Result<Response, ApiError> {
    call(h, e, Operation::Read, &format!("data/{key}"), json!({})).await
}

#[tokio::test]
async fn v1_reads_writes_lists_and_deletes_whole_values() {
    let h = Harness::new("kv/", "kv", &[]);
    let e = KvEngine::new();
    let req = |op, path: &str, body| Request::new(op, format!("kv/{path}")).with_data(data(body));
    let write = req(Operation::Create, "a", json!({"x": 1, "ttl": "1h"}));
    assert_eq!(
        e.exists(&h.ctx("a", None), &write).expect("ok"),
        Some(false)
    );
    assert!(h.run(&e, "a", &write).await.expect("ok").is_empty());
    assert_eq!(e.exists(&h.ctx("a", None), &write).expect("ok"), Some(true));
    h.run(
        &e,
        "dir/b",
        &req(Operation::Create, "dir/b", json!({"y": true})),
    )
    .await
    .expect("ok");

    let got = h
        .run(&e, "a", &req(Operation::Read, "a", json!({})))
        .await
        .expect("ok");
    assert_eq!(got.data, Some(data(json!({"x": 1, "ttl": "1h"}))));
    assert_eq!(
        got.lease.as_ref().map(|l| (l.ttl, l.lease_id.as_str())),
        Some((3600, ""))
    );
    let got = h
        .run(&e, "dir/b", &req(Operation::Read, "dir/b", json!({})))
        .await
        .expect("ok");
    assert_eq!(
        got.lease.map(|l| l.ttl),
        Some(h.mount.config.effective_default_ttl())
    );

    // Replacing is whole-value.
    h.run(&e, "a", &req(Operation::Update, "a", json!({"z": 2})))
        .await
        .expect("ok");
    let got = h
        .run(&e, "a", &req(Operation::Read, "a", json!({})))
        .await
        .expect("ok");
    assert_eq!(got.data, Some(data(json!({"z": 2}))));

    let list = h
        .run(&e, "", &req(Operation::List, "", json!({})))
        .await
        .expect("ok");
    assert_eq!(body(list), json!({"keys": ["a", "dir/"]}));
    let list = h
        .run(&e, "dir", &req(Operation::List, "dir", json!({})))
        .await
        .expect("ok");
    assert_eq!(body(list), json!({"keys": ["b"]}));
    assert!(is_not_found(
        &h.run(&e, "nope/", &req(Operation::List, "nope/", json!({})))
            .await
    ));

    bad_request(
        h.run(&e, "a", &req(Operation::Update, "a", json!({})))
            .await,
    );
    for bad in ["../x", "a//b", "a/./b", "x/"] {
        bad_request(
            h.run(&e, bad, &req(Operation::Update, bad, json!({"v": 1})))
                .await,
        );
    }
    assert!(matches!(
        h.run(&e, "a", &req(Operation::Patch, "a", json!({"v": 1})))
            .await,
        Err(ApiError::UnsupportedOperation)
    ));

    assert!(
        h.run(&e, "a", &req(Operation::Delete, "a", json!({})))
            .await
            .expect("ok")
            .is_empty()
    );
    assert!(
        h.run(&e, "a", &req(Operation::Delete, "a", json!({})))
            .await
            .expect("ok")
            .is_empty()
    );
    assert!(is_not_found(
        &h.run(&e, "a", &req(Operation::Read, "a", json!({}))).await
    ));
}

#[test]
fn options_take_only_a_version_defaulting_to_1() {
    let e = KvEngine::new();
    let opts = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        e.check_options(&opts(&[])).expect("ok"),
        opts(&[("version", "1")])
    );
    assert_eq!(
        e.check_options(&opts(&[("version", "2")])).expect("ok"),
        opts(&[("version", "2")])
    );
    assert!(e.check_options(&opts(&[("version", "3")])).is_err());
    assert!(e.check_options(&opts(&[("colour", "blue")])).is_err());
}

#[tokio::test]
async fn config_defaults_updates_and_type_errors() {
    let (h, e) = v2();
    let got = body(
        call(&h, &e, Operation::Read, "config", json!({}))
            .await
            .expect("ok"),
    );
    assert_eq!(
        got,
        json!({"cas_required": false, "delete_version_after": "0s", "max_versions": 0})
    );
    let w = call(
        &h,
        &e,
        Operation::Update,
        "config",
        json!({"max_versions": "5", "cas_required": true, "delete_version_after": 3600}),
    )
    .await
    .expect("ok");
    assert!(w.is_empty());
    let got = body(
        call(&h, &e, Operation::Read, "config", json!({}))
            .await
            .expect("ok"),
    );
    assert_eq!(
        got,
        json!({"cas_required": true, "delete_version_after": "1h0m0s", "max_versions": 5})
    );
    call(
        &h,
        &e,
        Operation::Update,
        "config",
        json!({"delete_version_after": "-1s"}),
    )
    .await
    .expect("ok");
    let got = body(
        call(&h, &e, Operation::Read, "config", json!({}))
            .await
            .expect("ok"),
    );
    assert_eq!(got["delete_version_after"], "-1s");

    for (field, value) in [
        ("max_versions", json!("banana")),
        ("max_versions", json!(-1)),
        ("cas_required", json!("maybe")),
        ("delete_version_after", json!("soon")),
    ] {
        let msg =
            bad_request(call(&h, &e, Operation::Update, "config", json!({field: value})).await);
        assert!(msg.contains(field), "{msg}");
    }
    assert_eq!(
        e.exists(
            &h.ctx("config", None),
            &request(Operation::Update, "config", json!({}))
        )
        .expect("ok"),
        Some(true)
    );
}

#[tokio::test]
async fn data_versions_read_back_with_their_metadata() {
    let (h, e) = v2();
    let w = put(&h, &e, "app/db", json!({"pw": "one"})).await;
    assert_eq!(w["version"], 1);
    assert_eq!(w["deletion_time"], "");
    assert_eq!(w["destroyed"], false);
    assert_eq!(w["custom_metadata"], Value::Null);
    assert_eq!(w["created_time"], "2023-11-14T22:13:20.123456789Z");
    put(&h, &e, "app/db", json!({"pw": "two"})).await;

    let got = body(get(&h, &e, "app/db").await.expect("ok"));
    assert_eq!(got["data"], json!({"pw": "two"}));
    assert_eq!(
        got["metadata"],
        json!({
            "created_time": "2023-11-14T22:13:20.123456789Z",
            "custom_metadata": null,
            "deletion_time": "",
            "destroyed": false,
            "version": 2,
        })
    );
    for (q, want) in [
        (json!({"version": "1"}), "one"),
        (json!({"version": 0}), "two"),
    ] {
        let got = body(
            call(&h, &e, Operation::Read, "data/app/db", q)
                .await
                .expect("ok"),
        );
        assert_eq!(got["data"]["pw"], want);
    }
    assert!(is_not_found(
        &call(
            &h,
            &e,
            Operation::Read,
            "data/app/db",
            json!({"version": "9"})
        )
        .await
    ));
    assert!(is_not_found(&get(&h, &e, "app/none").await));
    let msg = bad_request(
        call(
            &h,
            &e,
            Operation::Read,
            "data/app/db",
            json!({"version": "x"}),
        )
        .await,
    );
    assert!(msg.contains("version"), "{msg}");

    // Create vs update.
    let probe = request(Operation::Update, "data/app/db", json!({}));
    assert_eq!(
        e.exists(&h.ctx("data/app/db", None), &probe).expect("ok"),
        Some(true)
    );
    assert_eq!(
        e.exists(&h.ctx("data/app/x", None), &probe).expect("ok"),
        Some(false)
    );
    assert_eq!(
        e.exists(&h.ctx("metadata/app/db", None), &probe)
            .expect("ok"),
        Some(true)
    );
    assert_eq!(
        e.exists(&h.ctx("destroy/app/db", None), &probe)
            .expect("ok"),
        None
    );

    // Unknown sections and lists on data/ are not routes.
    assert!(is_not_found(
        &call(&h, &e, Operation::Read, "app/db", json!({})).await
    ));
    assert!(is_not_found(
        &call(&h, &e, Operation::Read, "data/", json!({})).await
    ));
    assert!(matches!(
        call(&h, &e, Operation::List, "data/app/", json!({})).await,
        Err(ApiError::UnsupportedOperation)
    ));
}

#[tokio::test]
async fn check_and_set() {
    let (h, e) = v2();
    let w = |cas: Value| json!({"data": {"v": 1}, "options": {"cas": cas}});
    // cas 0: create only.
    call(&h, &e, Operation::Create, "data/k", w(json!(0)))
        .await
        .expect("ok");
    let msg = bad_request(call(&h, &e, Operation::Update, "data/k", w(json!(0))).await);
    assert_eq!(
        msg,
        "check-and-set parameter did not match the current version"
    );
    let msg = bad_request(call(&h, &e, Operation::Update, "data/k", w(json!(5))).await);
    assert_eq!(
        msg,
        "check-and-set parameter did not match the current version"
    );
    call(&h, &e, Operation::Update, "data/k", w(json!(1)))
        .await
        .expect("ok");
    call(&h, &e, Operation::Update, "data/k", w(json!("2")))
        .await
        .expect("ok");
    let msg = bad_request(call(&h, &e, Operation::Update, "data/k", w(json!(-1))).await);
    assert!(msg.contains("cas"), "{msg}");

    // Required by the key's metadata.
    call(
        &h,
        &e,
        Operation::Update,
        "metadata/k",
        json!({"cas_required": true}),
    )
    .await
    .expect("ok");
    let msg = bad_request(put_raw(&h, &e, "k").await);
    assert_eq!(msg, "check-and-set parameter required for this call");
    call(&h, &e, Operation::Update, "data/k", w(json!(3)))
        .await
        .expect("ok");

    // Required by the mount.
    call(
        &h,
        &e,
        Operation::Update,
        "config",
        json!({"cas_required": true}),
    )
    .await
    .expect("ok");
    let msg = bad_request(put_raw(&h, &e, "other").await);
    assert_eq!(msg, "check-and-set parameter required for this call");
    call(&h, &e, Operation::Update, "data/other", w(json!(0)))
        .await
        .expect("ok");
}

async fn put_raw(h: &Harness, e: &KvEngine, key: &str) -> Result<Response, ApiError> {
    call(
        h,
        e,
        Operation::Update,
        &format!("data/{key}"),
        json!({"data": {"v": 1}}),
    )
    .await
}

#[tokio::test]
async fn max_versions_prunes_the_oldest() {
    let (h, e) = v2();
    call(
        &h,
        &e,
        Operation::Update,
        "config",
        json!({"max_versions": 2}),
    )
    .await
    .expect("ok");
    for i in 1..=3 {
        put(&h, &e, "k", json!({"i": i})).await;
    }
    let meta = body(
        call(&h, &e, Operation::Read, "metadata/k", json!({}))
            .await
            .expect("ok"),
    );
    assert_eq!(meta["current_version"], 3);
    assert_eq!(meta["oldest_version"], 2);
    assert_eq!(
        meta["versions"]
            .as_object()
            .expect("ok")
            .keys()
            .collect::<Vec<_>>(),
        ["2", "3"]
    );
    assert!(is_not_found(
        &call(&h, &e, Operation::Read, "data/k", json!({"version": 1})).await
    ));
    // Version 1's data is gone from storage, not just hidden.
    assert!(h.view.get("ver/k/1").expect("ok").is_none());
    assert!(h.view.get("ver/k/2").expect("ok").is_some());

    // The key's own setting, when larger, wins (as current Vault).
    call(
        &h,
        &e,
        Operation::Update,
        "metadata/k",
        json!({"max_versions": 4}),
    )
    .await
    .expect("ok");
    for i in 4..=6 {
        put(&h, &e, "k", json!({"i": i})).await;
    }
    let meta = body(
        call(&h, &e, Operation::Read, "metadata/k", json!({}))
            .await
            .expect("ok"),
    );
    assert_eq!(meta["oldest_version"], 3);
    assert_eq!(meta["max_versions"], 4);
    assert_eq!(meta["versions"].as_object().expect("ok").len(), 4);
}

#[tokio::test]
async fn soft_delete_undelete_and_destroy() {
    let (h, e) = v2();
    put(&h, &e, "k", json!({"v": 1})).await;
    put(&h, &e, "k", json!({"v": 2})).await;

    assert!(
        call(&h, &e, Operation::Delete, "data/k", json!({}))
            .await
            .expect("ok")
            .is_empty()
    );
    let got = not_found_body(get(&h, &e, "k").await);
    assert_eq!(got["data"], Value::Null);
    assert_eq!(got["metadata"]["version"], 2);
    assert_eq!(
        got["metadata"]["deletion_time"],
        "2023-11-14T22:13:20.123456789Z"
    );
    assert_eq!(got["metadata"]["destroyed"], false);
    // Older versions stay readable.
    assert!(
        call(&h, &e, Operation::Read, "data/k", json!({"version": 1}))
            .await
            .is_ok()
    );

    call(
        &h,
        &e,
        Operation::Update,
        "undelete/k",
        json!({"versions": [2]}),
    )
    .await
    .expect("ok");
    assert_eq!(
        body(get(&h, &e, "k").await.expect("ok"))["data"],
        json!({"v": 2})
    );

    call(
        &h,
        &e,
        Operation::Update,
        "delete/k",
        json!({"versions": "1,2"}),
    )
    .await
    .expect("ok");
    assert!(not_found_body(call(&h, &e, Operation::Read, "data/k", json!({"version": 1})).await)
        ["metadata"]["deletion_time"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));

    call(
        &h,
        &e,
        Operation::Update,
        "destroy/k",
        json!({"versions": [1]}),
    )
    .await
    .expect("ok");
    let got = not_found_body(call(&h, &e, Operation::Read, "data/k", json!({"version": 1})).await);
    assert_eq!(got["metadata"]["destroyed"], true);
    assert!(h.view.get("ver/k/1").expect("ok").is_none());
    // A destroyed version cannot be undeleted.
    call(
        &h,
        &e,
        Operation::Update,
        "undelete/k",
        json!({"versions": [1, 2]}),
    )
    .await
    .expect("ok");
    assert!(
        not_found_body(call(&h, &e, Operation::Read, "data/k", json!({"version": 1})).await)["metadata"]
            ["destroyed"]
            == true
    );
    assert!(get(&h, &e, "k").await.is_ok());

    let meta = body(
        call(&h, &e, Operation::Read, "metadata/k", json!({}))
            .await
            .expect("ok"),
    );
    assert_eq!(meta["versions"]["1"]["destroyed"], true);

    for path in ["delete/k", "undelete/k", "destroy/k"] {
        let msg = bad_request(call(&h, &e, Operation::Update, path, json!({})).await);
        assert_eq!(msg, "no version number provided");
        let msg = bad_request(call(&h, &e, Operation::Update, path, json!({"versions": []})).await);
        assert_eq!(msg, "no version number provided");
        let msg =
            bad_request(call(&h, &e, Operation::Update, path, json!({"versions": "x"})).await);
        assert!(msg.contains("versions"), "{msg}");
        // Absent keys are fine.
        assert!(
            call(
                &h,
                &e,
                Operation::Update,
                &path.replace("/k", "/none"),
                json!({"versions": [1]})
            )
            .await
            .expect("ok")
            .is_empty()
        );
    }
    // Deleting an absent key is a 204.
    assert!(
        call(&h, &e, Operation::Delete, "data/none", json!({}))
            .await
            .expect("ok")
            .is_empty()
    );
}

#[tokio::test]
async fn delete_version_after_expires_versions() {
    let (h, e) = v2();
    call(
        &h,
        &e,
        Operation::Update,
        "config",
        json!({"delete_version_after": "1h"}),
    )
    .await
    .expect("ok");
    let w = put(&h, &e, "k", json!({"v": 1})).await;
    assert_eq!(w["deletion_time"], "2023-11-14T23:13:20.123456789Z");
    // Before the deadline the version reads normally, deadline shown.
    let got = body(
        call_at(&h, &e, Operation::Read, "data/k", json!({}), 3599)
            .await
            .expect("ok"),
    );
    assert_eq!(got["data"], json!({"v": 1}));
    assert_eq!(
        got["metadata"]["deletion_time"],
        "2023-11-14T23:13:20.123456789Z"
    );
    // After it, a 404 with the metadata.
    let got = not_found_body(call_at(&h, &e, Operation::Read, "data/k", json!({}), 3601).await);
    assert_eq!(got["data"], Value::Null);

    // A shorter per-key setting wins; a longer one does not.
    call(
        &h,
        &e,
        Operation::Update,
        "metadata/k",
        json!({"delete_version_after": "10m"}),
    )
    .await
    .expect("ok");
    let w = put(&h, &e, "k", json!({"v": 2})).await;
    assert_eq!(w["deletion_time"], "2023-11-14T22:23:20.123456789Z");
    let meta = body(
        call(&h, &e, Operation::Read, "metadata/k", json!({}))
            .await
            .expect("ok"),
    );
    assert_eq!(meta["delete_version_after"], "10m0s");
    let msg = bad_request(
        call(
            &h,
            &e,
            Operation::Update,
            "metadata/k",
            json!({"delete_version_after": "-5s"}),
        )
        .await,
    );
    assert!(msg.contains("delete_version_after"), "{msg}");
}

#[tokio::test]
async fn metadata_crud_and_nested_lists() {
    let (h, e) = v2();
    // Metadata may exist before any data.
    call(
        &h,
        &e,
        Operation::Create,
        "metadata/pending",
        json!({"max_versions": 3, "custom_metadata": {"owner": "ops", "n": 7}}),
    )
    .await
    .expect("ok");
    let meta = body(
        call(&h, &e, Operation::Read, "metadata/pending", json!({}))
            .await
            .expect("ok"),
    );
    assert_eq!(
        meta,
        json!({
            "cas_required": false,
            "created_time": "2023-11-14T22:13:20.123456789Z",
            "current_version": 0,
            "custom_metadata": {"n": "7", "owner": "ops"},
            "delete_version_after": "0s",
            "max_versions": 3,
            "oldest_version": 0,
            "updated_time": "2023-11-14T22:13:20.123456789Z",
            "versions": {},
        })
    );
    assert!(is_not_found(&get(&h, &e, "pending").await));
    let w = put(&h, &e, "pending", json!({"a": 1})).await;
    assert_eq!(w["custom_metadata"], json!({"n": "7", "owner": "ops"}));

    put(&h, &e, "foo", json!({"a": 1})).await;
    put(&h, &e, "dir/a", json!({"a": 1})).await;
    put(&h, &e, "dir/sub/b", json!({"a": 1})).await;
    put(&h, &e, "foo/bar", json!({"a": 1})).await;
    let list = |p: &'static str| {
        let (h, e) = (&h, &e);
        async move { call(h, e, Operation::List, p, json!({})).await }
    };
    assert_eq!(
        body(list("metadata/").await.expect("ok")),
        json!({"keys": ["dir/", "foo", "foo/", "pending"]})
    );
    assert_eq!(
        body(list("metadata/dir/").await.expect("ok")),
        json!({"keys": ["a", "sub/"]})
    );
    assert_eq!(
        body(list("metadata/dir").await.expect("ok")),
        json!({"keys": ["a", "sub/"]})
    );
    assert!(is_not_found(&list("metadata/nothing/").await));

    // Deleting metadata removes every version for good, and only that key.
    call(&h, &e, Operation::Delete, "metadata/foo", json!({}))
        .await
        .expect("ok");
    assert!(is_not_found(&get(&h, &e, "foo").await));
    assert!(h.view.get("ver/foo/1").expect("ok").is_none());
    assert!(get(&h, &e, "foo/bar").await.is_ok());
    assert!(is_not_found(
        &call(&h, &e, Operation::Read, "metadata/foo", json!({})).await
    ));
    assert!(
        call(&h, &e, Operation::Delete, "metadata/foo", json!({}))
            .await
            .expect("ok")
            .is_empty()
    );

    // Custom metadata limits.
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let msg = bad_request(
        call(
            &h,
            &e,
            Operation::Update,
            "metadata/x",
            json!({"custom_metadata": many}),
        )
        .await,
    );
    assert!(msg.contains("at most 64 keys"), "{msg}");
    let msg = bad_request(
        call(
            &h,
            &e,
            Operation::Update,
            "metadata/x",
            json!({"custom_metadata": {"k": "v".repeat(513)}}),
        )
        .await,
    );
    assert!(msg.contains("custom_metadata"), "{msg}");
    let msg = bad_request(
        call(
            &h,
            &e,
            Operation::Update,
            "metadata/x",
            json!({"custom_metadata": {"k".repeat(129): "v"}}),
        )
        .await,
    );
    assert!(msg.contains("custom_metadata"), "{msg}");
    let msg = bad_request(
        call(
            &h,
            &e,
            Operation::Update,
            "metadata/x",
            json!({"custom_metadata": "x"}),
        )
        .await,
    );
    assert!(msg.contains("custom_metadata"), "{msg}");
    let msg = bad_request(
        call(
            &h,
            &e,
            Operation::Update,
            "metadata/x",
            json!({"max_versions": "banana"}),
        )
        .await,
    );
    assert!(msg.contains("max_versions"), "{msg}");
    assert!(is_not_found(
        &call(&h, &e, Operation::Read, "metadata/x", json!({})).await
    ));

    // Patch merges custom metadata and leaves other fields alone.
    call(
        &h,
        &e,
        Operation::Patch,
        "metadata/pending",
        json!({"custom_metadata": {"owner": null, "team": "blue"}, "cas_required": true}),
    )
    .await
    .expect("ok");
    let meta = body(
        call(&h, &e, Operation::Read, "metadata/pending", json!({}))
            .await
            .expect("ok"),
    );
    assert_eq!(meta["custom_metadata"], json!({"n": "7", "team": "blue"}));
    assert_eq!(meta["cas_required"], true);
    assert_eq!(meta["max_versions"], 3);
    assert!(is_not_found(
        &call(
            &h,
            &e,
            Operation::Patch,
            "metadata/absent",
            json!({"max_versions": 1})
        )
        .await
    ));
}

#[tokio::test]
async fn merge_patch_makes_a_new_version() {
    let (h, e) = v2();
    put(&h, &e, "k", json!({"a": 1, "b": {"c": 2, "d": 3}})).await;
    let w = body(
        call(
            &h,
            &e,
            Operation::Patch,
            "data/k",
            json!({"data": {"a": null, "b": {"c": 20}, "e": "new"}}),
        )
        .await
        .expect("ok"),
    );
    assert_eq!(w["version"], 2);
    let got = body(get(&h, &e, "k").await.expect("ok"));
    assert_eq!(got["data"], json!({"b": {"c": 20, "d": 3}, "e": "new"}));

    // Content type is required.
    let mut req = request(Operation::Patch, "data/k", json!({"data": {"a": 1}}));
    req.content_type = Some("application/json".into());
    let msg = bad_request(h.run(&e, "data/k", &req).await);
    assert!(msg.contains("merge-patch"), "{msg}");
    req.content_type = Some("application/merge-patch+json; charset=utf-8".into());
    assert!(h.run(&e, "data/k", &req).await.is_ok());

    // CAS applies.
    let msg = bad_request(
        call(
            &h,
            &e,
            Operation::Patch,
            "data/k",
            json!({"data": {"a": 1}, "options": {"cas": 1}}),
        )
        .await,
    );
    assert_eq!(
        msg,
        "check-and-set parameter did not match the current version"
    );
    call(
        &h,
        &e,
        Operation::Patch,
        "data/k",
        json!({"data": {"a": 2}, "options": {"cas": 3}}),
    )
    .await
    .expect("ok");

    // Missing data, missing key, deleted latest version.
    let msg = bad_request(call(&h, &e, Operation::Patch, "data/k", json!({})).await);
    assert_eq!(msg, "no data provided");
    let msg = bad_request(call(&h, &e, Operation::Patch, "data/k", json!({"data": "x"})).await);
    assert!(msg.contains("\"data\""), "{msg}");
    assert!(is_not_found(
        &call(
            &h,
            &e,
            Operation::Patch,
            "data/none",
            json!({"data": {"a": 1}})
        )
        .await
    ));
    call(&h, &e, Operation::Delete, "data/k", json!({}))
        .await
        .expect("ok");
    let got = not_found_body(
        call(
            &h,
            &e,
            Operation::Patch,
            "data/k",
            json!({"data": {"a": 1}}),
        )
        .await,
    );
    assert_eq!(got["version"], 4);
    assert!(got["deletion_time"].as_str().is_some_and(|t| !t.is_empty()));
}

#[tokio::test]
async fn subkeys_show_structure_to_a_depth() {
    let (h, e) = v2();
    put(
        &h,
        &e,
        "k",
        json!({"foo": "abc", "bar": {"baz": "def", "deep": {"x": 1}}, "quux": {}}),
    )
    .await;
    let got = body(
        call(&h, &e, Operation::Read, "subkeys/k", json!({}))
            .await
            .expect("ok"),
    );
    assert_eq!(
        got["subkeys"],
        json!({"bar": {"baz": null, "deep": {"x": null}}, "foo": null, "quux": null})
    );
    assert_eq!(got["metadata"]["version"], 1);
    let got = body(
        call(&h, &e, Operation::Read, "subkeys/k", json!({"depth": "1"}))
            .await
            .expect("ok"),
    );
    assert_eq!(
        got["subkeys"],
        json!({"bar": null, "foo": null, "quux": null})
    );
    let got = body(
        call(&h, &e, Operation::Read, "subkeys/k", json!({"depth": 2}))
            .await
            .expect("ok"),
    );
    assert_eq!(
        got["subkeys"],
        json!({"bar": {"baz": null, "deep": null}, "foo": null, "quux": null})
    );
    let msg = bad_request(
        call(
            &h,
            &e,
            Operation::Read,
            "subkeys/k",
            json!({"depth": "deep"}),
        )
        .await,
    );
    assert!(msg.contains("depth"), "{msg}");
    call(&h, &e, Operation::Delete, "data/k", json!({}))
        .await
        .expect("ok");
    let got = not_found_body(call(&h, &e, Operation::Read, "subkeys/k", json!({})).await);
    assert_eq!(got["subkeys"], Value::Null);
    assert!(is_not_found(
        &call(&h, &e, Operation::Read, "subkeys/none", json!({})).await
    ));
}

#[tokio::test]
async fn wrong_types_are_400s_naming_the_field() {
    let (h, e) = v2();
    for (path, body, field) in [
        ("data/k", json!({"data": "x"}), "data"),
        (
            "data/k",
            json!({"data": {"a": 1}, "options": "x"}),
            "options",
        ),
        (
            "data/k",
            json!({"data": {"a": 1}, "options": {"cas": "x"}}),
            "cas",
        ),
        (
            "data/k",
            json!({"data": {"a": 1}, "options": {"cas": -1}}),
            "cas",
        ),
        ("config", json!({"max_versions": "banana"}), "max_versions"),
        ("metadata/k", json!({"cas_required": [1]}), "cas_required"),
        ("delete/k", json!({"versions": "x"}), "versions"),
        ("destroy/k", json!({"versions": [-1]}), "versions"),
        ("undelete/k", json!({"versions": {"a": 1}}), "versions"),
    ] {
        let msg = bad_request(call(&h, &e, Operation::Update, path, body).await);
        assert!(msg.contains(field), "{path}: {msg}");
    }
    assert_eq!(
        bad_request(call(&h, &e, Operation::Update, "data/k", json!({})).await),
        "no data provided"
    );
    assert!(h.view.list("").expect("ok").is_empty(), "nothing written");
}

#[tokio::test]
async fn traversal_keys_are_refused_and_write_nothing() {
    let (h, e) = v2();
    for bad in ["../x", "a//b", "a/../../b", "./a", "a/.", "a\u{0}b", "a\\b"] {
        for section in ["data", "metadata"] {
            let path = format!("{section}/{bad}");
            let body = json!({"data": {"v": 1}, "max_versions": 1});
            bad_request(call(&h, &e, Operation::Update, &path, body).await);
        }
        bad_request(get(&h, &e, bad).await);
        bad_request(
            call(
                &h,
                &e,
                Operation::Update,
                &format!("destroy/{bad}"),
                json!({"versions": [1]}),
            )
            .await,
        );
    }
    assert!(h.view.list("").expect("ok").is_empty(), "nothing written");
}

#[tokio::test]
async fn upgrading_v1_to_v2_keeps_every_key_as_version_1() {
    let h = Harness::new("kv/", "kv", &[]);
    let e = KvEngine::new();
    for (key, v) in [("a", 1), ("dir/b", 2), ("dir/deeper/c", 3), ("a/x", 4)] {
        let req =
            Request::new(Operation::Create, format!("kv/{key}")).with_data(data(json!({"v": v})));
        h.run(&e, key, &req).await.expect("ok");
    }
    let old = e.check_options(&BTreeMap::new()).expect("ok");
    let new = e
        .check_options(&BTreeMap::from([("version".into(), "2".into())]))
        .expect("ok");
    e.options_changed(&h.view, &old, &new).await.expect("ok");

    let mut h = h;
    h.mount.options = new.clone();
    for (key, v) in [("a", 1), ("dir/b", 2), ("dir/deeper/c", 3), ("a/x", 4)] {
        let got = body(get(&h, &e, key).await.expect("ok"));
        assert_eq!(got["data"], json!({"v": v}), "{key}");
        assert_eq!(got["metadata"]["version"], 1);
    }
    assert_eq!(
        body(
            call(&h, &e, Operation::List, "metadata/", json!({}))
                .await
                .expect("ok")
        ),
        json!({"keys": ["a", "a/", "dir/"]})
    );
    assert!(
        h.view.list("data/").expect("ok").is_empty(),
        "v1 entries removed"
    );
    // Running it again is harmless.
    e.options_changed(&h.view, &old, &new).await.expect("ok");

    assert!(matches!(
        e.options_changed(&h.view, &new, &old).await,
        Err(ApiError::InvalidRequest(_))
    ));
}
