use serde_json::{Value, json};

use super::*;
use crate::engines::testing::{Harness, data};

fn setup() -> (Harness, TransitEngine) {
    (
        Harness::new("transit/", "transit", &[]),
        TransitEngine::new(),
    )
}

async fn call(
    h: &Harness,
    e: &TransitEngine,
    op: Operation,
    path: &str,
    body: Value,
) -> Result<Response, ApiError> {
    let req = Request::new(op, format!("transit/{path}")).with_data(data(body));
    h.run(e, path, &req).await
}

async fn ok(h: &Harness, e: &TransitEngine, path: &str, body: Value) -> Value {
    let resp = call(h, e, Operation::Update, path, body)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    Value::Object(resp.data.unwrap_or_default())
}

fn bad(res: Result<Response, ApiError>) -> String {
    match res {
        Err(ApiError::InvalidRequest(m)) => m,
        other => panic!("expected a 400, got {other:?}"),
    }
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

#[tokio::test]
async fn encrypt_creates_the_key_and_decrypt_returns_the_plaintext() {
    let (h, e) = setup();
    let r = ok(
        &h,
        &e,
        "encrypt/orders",
        json!({"plaintext": b64(b"card 4111")}),
    )
    .await;
    let ct = r["ciphertext"].as_str().expect("ciphertext").to_owned();
    assert!(ct.starts_with("vault:v1:"), "{ct}");
    assert_eq!(r["key_version"], 1);
    let r = ok(&h, &e, "decrypt/orders", json!({"ciphertext": ct})).await;
    assert_eq!(r["plaintext"], b64(b"card 4111"));

    let key = call(&h, &e, Operation::Read, "keys/orders", json!({}))
        .await
        .expect("read");
    let key = Value::Object(key.data.expect("data"));
    assert_eq!(key["type"], "aes256-gcm96");
    assert_eq!(key["latest_version"], 1);
    assert_eq!(key["exportable"], false);
    assert_eq!(key["keys"]["1"], h.now.unix_timestamp());
    // Nothing in the answer is key material: the only values are the
    // policy's, names and times.
    let stored = h.view.get("policy/orders").expect("get").expect("stored");
    let stored: Value = serde_json::from_slice(&stored).expect("json");
    let material = stored["versions"]["1"]["key"].as_str().expect("material");
    assert!(!key.to_string().contains(material));

    let list = call(&h, &e, Operation::List, "keys/", json!({}))
        .await
        .expect("list");
    assert_eq!(list.data.expect("data")["keys"], json!(["orders"]));
}

#[tokio::test]
async fn exists_makes_first_use_a_create() {
    let (h, e) = setup();
    let req = Request::new(Operation::Update, "transit/encrypt/k");
    assert_eq!(
        e.exists(&h.ctx("encrypt/k", None), &req).expect("ok"),
        Some(false)
    );
    ok(&h, &e, "keys/k", json!({})).await;
    assert_eq!(
        e.exists(&h.ctx("encrypt/k", None), &req).expect("ok"),
        Some(true)
    );
    assert_eq!(e.exists(&h.ctx("decrypt/k", None), &req).expect("ok"), None);
}

#[tokio::test]
async fn rotation_versions_and_rewrap() {
    let (h, e) = setup();
    ok(&h, &e, "keys/k", json!({"type": "chacha20-poly1305"})).await;
    let v1 = ok(&h, &e, "encrypt/k", json!({"plaintext": b64(b"a")})).await["ciphertext"].clone();
    let rotated = ok(&h, &e, "keys/k/rotate", json!({})).await;
    assert_eq!(rotated["latest_version"], 2);
    assert_eq!(rotated["type"], "chacha20-poly1305");
    let re = ok(&h, &e, "rewrap/k", json!({"ciphertext": v1})).await;
    assert_eq!(re["key_version"], 2);
    let v2 = re["ciphertext"].as_str().expect("ct").to_owned();
    assert!(v2.starts_with("vault:v2:"));
    assert_eq!(
        ok(&h, &e, "decrypt/k", json!({"ciphertext": v2})).await["plaintext"],
        b64(b"a")
    );

    ok(
        &h,
        &e,
        "keys/k/config",
        json!({"min_decryption_version": 2}),
    )
    .await;
    let msg = bad(call(
        &h,
        &e,
        Operation::Update,
        "decrypt/k",
        json!({"ciphertext": v1}),
    )
    .await);
    assert!(msg.contains("too old"), "{msg}");
    let msg = bad(call(
        &h,
        &e,
        Operation::Update,
        "keys/k/config",
        json!({"min_decryption_version": 5}),
    )
    .await);
    assert!(msg.contains("min_decryption_version"), "{msg}");
}

#[tokio::test]
async fn batches_answer_per_item_and_fail_only_when_every_item_does() {
    let (h, e) = setup();
    let r = ok(
        &h,
        &e,
        "encrypt/k",
        json!({"batch_input": [
            {"plaintext": b64(b"one"), "reference": "r1"},
            {"plaintext": "not base64!", "reference": "r2"},
        ]}),
    )
    .await;
    let results = r["batch_results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["reference"], "r1");
    assert!(results[0]["ciphertext"].is_string());
    assert_eq!(results[1]["reference"], "r2");
    assert!(
        results[1]["error"]
            .as_str()
            .is_some_and(|m| m.contains("base64")),
        "{r}"
    );
    let ct = results[0]["ciphertext"].clone();
    let d = ok(
        &h,
        &e,
        "decrypt/k",
        json!({"batch_input": [{"ciphertext": ct}, {"ciphertext": ct}]}),
    )
    .await;
    assert_eq!(d["batch_results"][1]["plaintext"], b64(b"one"));

    let msg = bad(call(
        &h,
        &e,
        Operation::Update,
        "decrypt/k",
        json!({"batch_input": [{"ciphertext": "vault:v1:AAAA"}, {"ciphertext": "x"}]}),
    )
    .await);
    assert!(msg.contains("invalid ciphertext"), "{msg}");
    let msg = bad(call(
        &h,
        &e,
        Operation::Update,
        "encrypt/k",
        json!({"batch_input": []}),
    )
    .await);
    assert!(msg.contains("batch"), "{msg}");
}

#[tokio::test]
async fn associated_data_binds_and_datakeys_open_with_the_key() {
    let (h, e) = setup();
    let ct = ok(
        &h,
        &e,
        "encrypt/k",
        json!({"plaintext": b64(b"p"), "associated_data": b64(b"tenant-7")}),
    )
    .await["ciphertext"]
        .clone();
    let msg = bad(call(
        &h,
        &e,
        Operation::Update,
        "decrypt/k",
        json!({"ciphertext": ct}),
    )
    .await);
    assert_eq!(msg, "cipher: message authentication failed");
    let r = ok(
        &h,
        &e,
        "decrypt/k",
        json!({"ciphertext": ct, "associated_data": b64(b"tenant-7")}),
    )
    .await;
    assert_eq!(r["plaintext"], b64(b"p"));

    let dk = ok(&h, &e, "datakey/plaintext/k", json!({"bits": 512})).await;
    let plain = B64
        .decode(dk["plaintext"].as_str().expect("plaintext"))
        .expect("b64");
    assert_eq!(plain.len(), 64);
    let opened = ok(&h, &e, "decrypt/k", json!({"ciphertext": dk["ciphertext"]})).await;
    assert_eq!(opened["plaintext"], dk["plaintext"]);
    let wrapped = ok(&h, &e, "datakey/wrapped/k", json!({})).await;
    assert!(wrapped.get("plaintext").is_none(), "{wrapped}");
    assert!(
        wrapped["ciphertext"]
            .as_str()
            .is_some_and(|c| c.starts_with("vault:v1:"))
    );
    bad(call(
        &h,
        &e,
        Operation::Update,
        "datakey/wrapped/k",
        json!({"bits": 100}),
    )
    .await);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let (h, e) = setup();
    // Unknown key: decrypt, rewrap, rotate, config.
    for path in [
        "decrypt/none",
        "rewrap/none",
        "keys/none/rotate",
        "keys/none/config",
    ] {
        let msg = bad(call(
            &h,
            &e,
            Operation::Update,
            path,
            json!({"ciphertext": "vault:v1:AAAA"}),
        )
        .await);
        assert!(
            msg.contains("not found") || msg.contains("unknown field"),
            "{path}: {msg}"
        );
    }
    assert!(h.view.list("policy/").expect("list").is_empty());
    for (path, body, want) in [
        ("keys/k", json!({"type": "rsa-2048"}), "unknown key type"),
        ("keys/k", json!({"exportable": true}), "never leave"),
        ("keys/k", json!({"derived": true}), "not derived"),
        ("keys/k", json!({"colour": "red"}), "unknown field"),
        (
            "keys/k",
            json!({"auto_rotate_period": "10m"}),
            "at least an hour",
        ),
        ("keys/bad name", json!({}), "invalid key name"),
        ("encrypt/k", json!({}), "missing plaintext"),
        ("encrypt/k", json!({"plaintext": 5}), "base64"),
        (
            "encrypt/k",
            json!({"plaintext": b64(b"x"), "context": "Y3R4"}),
            "not derived",
        ),
        (
            "encrypt/k",
            json!({"plaintext": b64(b"x"), "key_version": 2}),
            "higher than the latest",
        ),
        ("encrypt/k", json!({"batch_input": "x"}), "list of objects"),
    ] {
        let msg = bad(call(&h, &e, Operation::Update, path, body.clone()).await);
        assert!(msg.contains(want), "{path} {body}: {msg}");
    }
    // Only the `encrypt` that failed on its version had created the key
    // (Vault upserts before it reads the item); nothing else was stored.
    assert!(
        h.view
            .list("policy/")
            .expect("list")
            .iter()
            .all(|k| k == "k"),
    );
    for path in ["export/encryption-key/k", "backup/k", "restore/k"] {
        let msg = bad(call(&h, &e, Operation::Read, path, json!({})).await);
        assert!(msg.contains("never leave"), "{path}: {msg}");
    }
    assert!(matches!(
        call(&h, &e, Operation::Read, "nowhere", json!({})).await,
        Err(ApiError::NotFound(_))
    ));
    assert!(matches!(
        call(&h, &e, Operation::Read, "encrypt/k", json!({})).await,
        Err(ApiError::UnsupportedOperation)
    ));
}

#[tokio::test]
async fn deletion_needs_deletion_allowed() {
    let (h, e) = setup();
    ok(&h, &e, "keys/k", json!({})).await;
    let msg = bad(call(&h, &e, Operation::Delete, "keys/k", json!({})).await);
    assert!(msg.contains("deletion is not allowed"), "{msg}");
    assert!(h.view.get("policy/k").expect("get").is_some());
    ok(&h, &e, "keys/k/config", json!({"deletion_allowed": true})).await;
    call(&h, &e, Operation::Delete, "keys/k", json!({}))
        .await
        .expect("delete");
    assert!(h.view.get("policy/k").expect("get").is_none());
    let msg = bad(call(
        &h,
        &e,
        Operation::Update,
        "decrypt/k",
        json!({"ciphertext": "vault:v1:AAAA"}),
    )
    .await);
    assert_eq!(msg, "encryption key not found");
}

#[tokio::test]
async fn keys_rotate_on_schedule() {
    let (h, e) = setup();
    ok(&h, &e, "keys/k", json!({"auto_rotate_period": "1h"})).await;
    ok(&h, &e, "keys/plain", json!({})).await;
    e.tick(&h.ctx("", None)).await.expect("tick");
    let latest = |name: &'static str| {
        let k = load(&h.view, name).expect("load").expect("present");
        k.latest_version
    };
    assert_eq!(latest("k"), 1, "not yet due");
    let mut later = h.ctx("", None);
    later.now += time::Duration::seconds(3_600);
    e.tick(&later).await.expect("tick");
    assert_eq!(latest("k"), 2);
    assert_eq!(latest("plain"), 1);
    e.tick(&later).await.expect("tick");
    assert_eq!(latest("k"), 2, "one rotation per period");
}
