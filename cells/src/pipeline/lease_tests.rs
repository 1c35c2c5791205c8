//! The lease machinery end to end through the pipeline, on an in-memory node
//! with the `lease-test` engine (which records what it was asked to revoke
//! and can fail like an unreachable database). The database engine's tests
//! do the same against a real PostgreSQL.

use std::time::Duration;

use serde_json::json;

use crate::api_error::ApiError;
use crate::engines::testing::lease_test_state;
use crate::lease::{LeaseSettings, RetryPolicy};
use crate::logical::{Operation, Outcome};
use crate::node_testing::TestNode;

fn settings(max_attempts: u32) -> LeaseSettings {
    LeaseSettings {
        tick: Duration::from_millis(50),
        batch: 8,
        concurrency: 4,
        revoke_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            base: Duration::from_millis(20),
            max_delay: Duration::from_millis(40),
            max_attempts,
        },
    }
}

/// From now on, the engine fails to revoke the users of role `bad`.
async fn fail_bad_users(t: &TestNode) {
    t.ok(
        Operation::Update,
        "db/fail",
        json!({"on": true, "match": "u-bad-"}),
    )
    .await;
}

#[tokio::test]
async fn leases_are_registered_and_revoked_on_expiry_and_with_their_token() {
    let t = TestNode::with_lease_test(settings(6)).await;
    let uuid = t.mount_uuid();
    let token = t.token(&["root"]).await;

    let resp = t
        .call_as(&token, Operation::Read, "db/creds/app", json!({"ttl": 1}))
        .await
        .expect("creds");
    let lease = resp.lease.clone().expect("lease");
    assert!(
        lease.lease_id.starts_with("db/creds/app/"),
        "{}",
        lease.lease_id
    );
    assert_eq!(lease.ttl, 1);
    assert!(lease.renewable);
    assert!(
        resp.secret.is_none(),
        "internal data never leaves the pipeline"
    );
    let user = resp.data.expect("data")["username"]
        .as_str()
        .expect("user")
        .to_owned();
    let info = t.lookup(&lease.lease_id).await.expect("lookup");
    assert_eq!(info["id"], lease.lease_id.as_str());
    assert!(info["ttl"].as_u64().expect("ttl") <= 1);
    assert_eq!(info["irrevocable"], false);
    assert!(info.get("internal").is_none() && !info.to_string().contains("\"user\""));

    // Expiry.
    t.expire_until(|| lease_test_state(&uuid).revoked.contains(&user))
        .await;
    assert!(matches!(
        t.lookup(&lease.lease_id).await,
        Err(ApiError::InvalidRequest(m)) if m == "invalid lease"
    ));

    // Revoking the token queues its leases, and its children's.
    let child = t
        .call_as(
            &token,
            Operation::Update,
            "auth/token/create",
            json!({"ttl": "1h"}),
        )
        .await
        .expect("child")
        .auth
        .expect("auth")
        .client_token;
    let (a, user_a) = t.creds(&token, "app", json!({"ttl": 3600})).await;
    let (b, user_b) = t.creds(&child, "app", json!({"ttl": 3600})).await;
    let other = t.token(&["root"]).await;
    let (c, _) = t.creds(&other, "app", json!({"ttl": 3600})).await;
    t.revoke_self(&token).await;
    t.expire_until(|| {
        let s = lease_test_state(&uuid);
        s.revoked.contains(&user_a) && s.revoked.contains(&user_b)
    })
    .await;
    for gone in [&a, &b] {
        assert!(t.lookup(gone).await.is_err(), "{gone}");
    }
    assert!(t.lookup(&c).await.is_ok(), "another token's lease stays");
}

#[tokio::test]
async fn failed_revocations_back_off_then_turn_irrevocable_until_forced() {
    let t = TestNode::with_lease_test(settings(3)).await;
    let uuid = t.mount_uuid();
    let (id, user) = t.creds(&t.root.clone(), "app", json!({"ttl": 1})).await;
    t.ok(Operation::Update, "db/fail", json!({"on": true}))
        .await;

    t.expire_until(|| lease_test_state(&uuid).revoke_calls >= 3)
        .await;
    let info = t.lookup(&id).await.expect("still there");
    assert_eq!(info["irrevocable"], true, "{info}");
    assert_eq!(info["revocation_attempts"], 3);
    assert!(
        info["last_revocation_error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable")),
        "{info}"
    );
    assert_eq!(info["renewable"], false);
    // Given up on: no further attempts however long the manager runs.
    let p = t.node.pipeline().await.expect("pipeline");
    for _ in 0..5 {
        p.expire_due().await.expect("round");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(lease_test_state(&uuid).revoke_calls, 3);

    let count = t
        .ok(
            Operation::Read,
            "sys/leases/count",
            json!({"type": "irrevocable"}),
        )
        .await
        .data
        .expect("data");
    assert_eq!(count["lease_count"], 1);
    assert_eq!(count["counts"]["db/"], 1);
    let listed = t
        .ok(
            Operation::Read,
            "sys/leases",
            json!({"type": "irrevocable"}),
        )
        .await
        .data
        .expect("data");
    assert_eq!(listed["leases"][0]["lease_id"], id.as_str());
    assert!(listed["leases"][0]["error"].as_str().is_some());

    let renew = t
        .call(
            Operation::Update,
            "sys/leases/renew",
            json!({"lease_id": id}),
        )
        .await;
    assert!(
        matches!(renew, Err(ApiError::InvalidRequest(_))),
        "{renew:?}"
    );

    // revoke-force removes it even though the engine still fails.
    let forced = t
        .ok(
            Operation::Update,
            &format!("sys/leases/revoke-force/{id}"),
            json!({}),
        )
        .await
        .data
        .expect("data");
    assert_eq!(forced["revoked"], 1);
    assert!(t.lookup(&id).await.is_err());
    assert!(
        lease_test_state(&uuid).live.contains(&user),
        "force does not pretend the user is gone"
    );
}

#[tokio::test]
async fn revoke_prefix_keeps_going_past_failures_and_reports_them() {
    let t = TestNode::with_lease_test(settings(6)).await;
    let uuid = t.mount_uuid();
    let root = t.root.clone();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(t.creds(&root, "app", json!({"ttl": 3600})).await.0);
    }
    let (bad, bad_user) = t.creds(&root, "bad", json!({"ttl": 3600})).await;
    let (kept, _) = t.creds(&root, "application", json!({"ttl": 3600})).await;
    fail_bad_users(&t).await;

    // `db/creds` is aligned on segments: both roles, but not `db/credsx`.
    let report = t
        .ok(
            Operation::Update,
            "sys/leases/revoke-prefix/db/creds/app",
            json!({}),
        )
        .await;
    let d = report.data.expect("data");
    assert_eq!(d["revoked"], 20, "{d:?}");
    assert_eq!(d["failed"], 0);
    assert!(
        t.lookup(&kept).await.is_ok(),
        "app/ must not match application/"
    );

    let report = t
        .ok(
            Operation::Update,
            "sys/leases/revoke-prefix/db/creds",
            json!({}),
        )
        .await;
    let d = report.data.expect("data");
    assert_eq!(d["revoked"], 1, "{d:?}");
    assert_eq!(d["failed"], 1);
    assert_eq!(d["failures"][0]["lease_id"], bad.as_str());
    assert!(!report.warnings.is_empty());
    let info = t.lookup(&bad).await.expect("failed lease stays");
    assert_eq!(info["revocation_attempts"], 1);
    assert!(info["next_revocation_attempt"].is_string());

    t.ok(Operation::Update, "db/fail", json!({"on": false}))
        .await;
    let d = t
        .ok(Operation::Update, "sys/revoke-prefix/db/creds", json!({}))
        .await
        .data
        .expect("data");
    assert_eq!(d["revoked"], 1, "the legacy path works too");
    let s = lease_test_state(&uuid);
    assert_eq!(s.revoked.len(), 22);
    assert!(s.revoked.contains(&bad_user));
    assert!(s.live.is_empty());
    for id in ids {
        assert!(t.lookup(&id).await.is_err());
    }
}

#[tokio::test]
async fn many_leases_are_revoked_in_batches_with_an_answer_for_each() {
    let mut many = settings(6);
    many.batch = 512;
    let t = TestNode::with_lease_test(many).await;
    let uuid = t.mount_uuid();
    let root = t.root.clone();
    let mut ids = Vec::new();
    let mut bad = Vec::new();
    for i in 0..600 {
        if i % 150 == 7 {
            bad.push(t.creds(&root, "bad", json!({"ttl": 3600})).await.0);
        } else {
            ids.push(t.creds(&root, "app", json!({"ttl": 3600})).await.0);
        }
    }
    fail_bad_users(&t).await;

    let d = t
        .ok(
            Operation::Update,
            "sys/leases/revoke-prefix/db/creds",
            json!({}),
        )
        .await
        .data
        .expect("data");
    assert_eq!(d["revoked"], ids.len(), "{d:?}");
    assert_eq!(d["failed"], bad.len());
    let mut reported: Vec<&str> = d["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| f["lease_id"].as_str().expect("id"))
        .collect();
    reported.sort_unstable();
    let mut expected: Vec<&str> = bad.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(
        reported, expected,
        "each failure is the failing lease's own"
    );

    let s = lease_test_state(&uuid);
    assert_eq!(s.revoked.len(), ids.len());
    assert_eq!(s.live.len(), bad.len());
    assert!(
        s.revoke_batches
            .iter()
            .all(|n| *n <= crate::engine::REVOKE_BATCH),
        "{:?}",
        s.revoke_batches
    );
    assert!(
        s.revoke_batches.len() < 10,
        "600 leases took {} engine calls",
        s.revoke_batches.len()
    );
    for id in &ids {
        assert!(t.lookup(id).await.is_err(), "{id} survived");
    }
    for id in &bad {
        let info = t.lookup(id).await.expect("a failed lease stays");
        assert_eq!(info["revocation_attempts"], 1);
    }
}

#[tokio::test]
async fn a_token_with_many_leases_queues_them_all() {
    let mut many = settings(6);
    many.batch = 512;
    let t = TestNode::with_lease_test(many).await;
    let uuid = t.mount_uuid();
    let token = t.token(&["root"]).await;
    let mut users = Vec::new();
    for _ in 0..300 {
        users.push(t.creds(&token, "app", json!({"ttl": 3600})).await.1);
    }
    let d = t
        .ok(
            Operation::Update,
            "sys/leases/revoke-prefix/db/creds/app",
            json!({"sync": false}),
        )
        .await
        .data
        .expect("data");
    assert_eq!(d["queued"], 300);
    t.expire_until(|| lease_test_state(&uuid).revoked.len() == 300)
        .await;

    for _ in 0..300 {
        users.push(t.creds(&token, "web", json!({"ttl": 3600})).await.1);
    }
    t.revoke_self(&token).await;
    t.expire_until(|| lease_test_state(&uuid).revoked.len() == 600)
        .await;
    let s = lease_test_state(&uuid);
    assert!(s.live.is_empty());
    let mut revoked = s.revoked.clone();
    revoked.sort_unstable();
    users.sort_unstable();
    assert_eq!(revoked, users);
}

#[tokio::test]
async fn renewal_calls_the_engine_and_stops_at_the_maximum() {
    let t = TestNode::with_lease_test(settings(6)).await;
    let uuid = t.mount_uuid();
    let root = t.root.clone();
    let (id, user) = t
        .creds(&root, "app", json!({"ttl": 60, "max_ttl": 100}))
        .await;
    let r = t
        .ok(
            Operation::Update,
            "sys/leases/renew",
            json!({"lease_id": id, "increment": 30}),
        )
        .await;
    let lease = r.lease.expect("lease");
    assert!((29..=30).contains(&lease.ttl), "{}", lease.ttl);
    assert!(r.warnings.is_empty());
    let r = t
        .ok(
            Operation::Update,
            &format!("sys/leases/renew/{id}"),
            json!({"increment": "1h"}),
        )
        .await;
    assert!(r.lease.expect("lease").ttl <= 100);
    assert!(r.warnings[0].contains("capped"), "{:?}", r.warnings);
    let renewed = lease_test_state(&uuid).renewed;
    assert_eq!(renewed.len(), 2);
    assert_eq!(renewed[0].0, user);
    let info = t.lookup(&id).await.expect("lookup");
    assert!(info["last_renewal"].is_string());

    // The engine fails: the lease is left as it was.
    t.ok(Operation::Update, "db/fail", json!({"on": true}))
        .await;
    let before = t.lookup(&id).await.expect("lookup")["expire_time"].clone();
    let e = t
        .call(
            Operation::Update,
            "sys/leases/renew",
            json!({"lease_id": id}),
        )
        .await
        .expect_err("engine down");
    assert_eq!(e.http_status(), 502);
    assert_eq!(t.lookup(&id).await.expect("lookup")["expire_time"], before);

    let (fixed, _) = t
        .creds(&root, "app", json!({"ttl": 60, "renewable": false}))
        .await;
    let e = t
        .call(
            Operation::Update,
            "sys/leases/renew",
            json!({"lease_id": fixed}),
        )
        .await
        .expect_err("not renewable");
    assert_eq!(e.to_string(), "lease is not renewable");
}

#[tokio::test]
async fn bad_lease_requests_are_refused_and_change_nothing() {
    let t = TestNode::with_lease_test(settings(6)).await;
    let root = t.root.clone();
    let (id, _) = t.creds(&root, "app", json!({"ttl": 3600})).await;
    for (op, path, body) in [
        (Operation::Update, "sys/leases/lookup", json!({})),
        (
            Operation::Update,
            "sys/leases/lookup",
            json!({"lease_id": "nope/x"}),
        ),
        (
            Operation::Update,
            "sys/leases/lookup",
            json!({"lease_id": "a\u{7}b"}),
        ),
        (
            Operation::Update,
            "sys/leases/renew",
            json!({"lease_id": "nope/x"}),
        ),
        (
            Operation::Update,
            "sys/leases/revoke",
            json!({"lease_id": ""}),
        ),
        (Operation::Read, "sys/leases/count", json!({})),
        (Operation::Read, "sys/leases/count", json!({"type": "some"})),
        (Operation::Read, "sys/leases", json!({"type": "all"})),
        (
            Operation::Update,
            "sys/leases/revoke-prefix/db",
            json!({"sync": "perhaps"}),
        ),
    ] {
        let e = t.call(op, path, body.clone()).await.expect_err(path);
        assert_eq!(e.http_status(), 400, "{path} {body}: {e}");
    }
    // Revoking what does not exist is not an error (a retry must succeed).
    t.ok(
        Operation::Update,
        "sys/leases/revoke",
        json!({"lease_id": "nope/x"}),
    )
    .await;
    // Bulk revocation and listing need sudo.
    t.ok(
        Operation::Update,
        "sys/policies/acl/leases",
        json!({"policy": "path \"sys/leases/*\" { capabilities = [\"update\", \"list\", \"read\"] }"}),
    )
    .await;
    let user = t.token(&["leases"]).await;
    for (op, path) in [
        (Operation::Update, "sys/leases/revoke-prefix/db/creds"),
        (Operation::Update, "sys/leases/revoke-force/db/creds"),
        (Operation::List, "sys/leases/lookup/db/creds/"),
    ] {
        let e = t.call_as(&user, op, path, json!({})).await.expect_err(path);
        assert!(matches!(e, ApiError::PermissionDenied), "{path}: {e}");
    }
    assert!(t.lookup(&id).await.is_ok(), "nothing changed");
    // Without sudo a lease can still be looked up and revoked by ID.
    t.call_as(
        &user,
        Operation::Update,
        "sys/leases/lookup",
        json!({"lease_id": id}),
    )
    .await
    .expect("lookup");
    let keys = t
        .ok(Operation::List, "sys/leases/lookup/db/creds/", json!({}))
        .await
        .data
        .expect("data");
    assert_eq!(keys["keys"], json!(["app/"]));
}

#[tokio::test]
async fn asynchronous_revocation_answers_202_and_the_manager_finishes() {
    let t = TestNode::with_lease_test(settings(6)).await;
    let uuid = t.mount_uuid();
    let root = t.root.clone();
    let (a, ua) = t.creds(&root, "app", json!({"ttl": 3600})).await;
    let (b, ub) = t.creds(&root, "web", json!({"ttl": 3600})).await;
    let r = t
        .ok(
            Operation::Update,
            "sys/leases/revoke",
            json!({"lease_id": a, "sync": false}),
        )
        .await;
    assert_eq!(r.outcome, Outcome::Accepted);
    let r = t
        .ok(
            Operation::Update,
            "sys/leases/revoke-prefix/db/creds/web",
            json!({"sync": false}),
        )
        .await;
    assert_eq!(r.outcome, Outcome::Accepted);
    assert_eq!(r.data.expect("data")["queued"], 1);
    t.expire_until(|| {
        let s = lease_test_state(&uuid);
        s.revoked.contains(&ua) && s.revoked.contains(&ub)
    })
    .await;
    assert!(t.lookup(&a).await.is_err() && t.lookup(&b).await.is_err());
}

#[tokio::test]
async fn disabling_a_mount_revokes_its_leases_first_or_not_at_all() {
    let t = TestNode::with_lease_test(settings(6)).await;
    let uuid = t.mount_uuid();
    let root = t.root.clone();
    let (_, u1) = t.creds(&root, "app", json!({"ttl": 3600})).await;
    let (_, u2) = t.creds(&root, "app", json!({"ttl": 3600})).await;
    t.ok(
        Operation::Update,
        "db/fail",
        json!({"on": true, "match": &u2}),
    )
    .await;
    let e = t
        .call(Operation::Delete, "sys/mounts/db", json!({}))
        .await
        .expect_err("a lease could not be revoked");
    assert!(e.to_string().contains("failed to revoke 1 leases"), "{e}");
    assert!(
        t.ok(Operation::Read, "sys/mounts", json!({}))
            .await
            .data
            .expect("data")
            .contains_key("db/"),
        "the mount stays"
    );
    t.ok(Operation::Update, "db/fail", json!({"on": false}))
        .await;
    t.ok(Operation::Delete, "sys/mounts/db", json!({})).await;
    let s = lease_test_state(&uuid);
    assert!(s.revoked.contains(&u1) && s.revoked.contains(&u2));
    let count = t
        .ok(Operation::Read, "sys/leases/count", json!({"type": "all"}))
        .await
        .data
        .expect("data");
    assert_eq!(count["lease_count"], 0);
}

#[tokio::test]
async fn tidy_finds_leases_whose_token_vanished_without_cleanup() {
    let t = TestNode::with_lease_test(settings(6)).await;
    let uuid = t.mount_uuid();
    let token = t.token(&["root"]).await;
    let (id, user) = t.creds(&token, "app", json!({"ttl": 3600})).await;
    // The token goes without the pipeline's cleanup (as after a crash
    // between the two).
    let p = t.node.pipeline().await.expect("pipeline");
    let entry = p.tokens.lookup(&token).expect("lookup").expect("entry");
    p.tokens.revoke_tree(&entry.hash).await.expect("revoke");
    assert!(t.lookup(&id).await.is_ok());
    let report = t
        .ok(Operation::Update, "sys/leases/tidy", json!({}))
        .await
        .data
        .expect("data");
    assert_eq!(report["leases_of_revoked_tokens"], 1, "{report:?}");
    t.expire_until(|| lease_test_state(&uuid).revoked.contains(&user))
        .await;
    let again = t
        .ok(Operation::Update, "sys/leases/tidy", json!({}))
        .await
        .data
        .expect("data");
    assert_eq!(again["leases_of_revoked_tokens"], 0);
    assert_eq!(again["stale_due_entries"], 0);
}

#[tokio::test]
async fn lease_count_quotas_refuse_before_the_engine_hands_anything_out() {
    let t = TestNode::with_lease_test(settings(6)).await;
    let uuid = t.mount_uuid();
    let root = t.root.clone();
    t.ok(
        Operation::Update,
        "sys/quotas/lease-count/db-app",
        json!({"path": "db/creds/app", "max_leases": 2}),
    )
    .await;
    let (first, _) = t.creds(&root, "app", json!({"ttl": 3600})).await;
    t.creds(&root, "app", json!({"ttl": 3600})).await;
    let e = t
        .call(Operation::Read, "db/creds/app", json!({"ttl": 3600}))
        .await
        .expect_err("over the quota");
    assert_eq!(e.http_status(), 429, "{e}");
    assert!(
        e.to_string().contains("lease count quota \"db-app\""),
        "{e}"
    );
    assert_eq!(
        lease_test_state(&uuid).live.len(),
        2,
        "nothing was handed out past the quota"
    );
    // Other paths are not covered; revoking one makes room.
    t.creds(&root, "web", json!({"ttl": 3600})).await;
    t.ok(
        Operation::Update,
        "sys/leases/revoke",
        json!({"lease_id": first}),
    )
    .await;
    t.creds(&root, "app", json!({"ttl": 3600})).await;
    let q = t
        .ok(Operation::Read, "sys/quotas/lease-count/db-app", json!({}))
        .await
        .data
        .expect("data");
    assert_eq!(q["max_leases"], 2);
    for bad in [
        json!({"max_leases": 0}),
        json!({"max_leases": "many"}),
        json!({"path": "a/../b", "max_leases": 1}),
        json!({"unknown": 1, "max_leases": 1}),
    ] {
        let e = t
            .call(Operation::Update, "sys/quotas/lease-count/bad", bad.clone())
            .await
            .expect_err("refused");
        assert_eq!(e.http_status(), 400, "{bad}: {e}");
    }
}

#[tokio::test]
async fn rate_limit_quotas_answer_429_per_client_and_spare_the_quota_api() {
    let t = TestNode::with_lease_test(settings(6)).await;
    let root = t.root.clone();
    t.ok(
        Operation::Update,
        "sys/quotas/rate-limit/kv",
        json!({"path": "cubbyhole/", "rate": 2, "interval": "1h"}),
    )
    .await;
    let call = |from: &'static str| {
        let t = &t;
        let root = root.clone();
        async move {
            t.call_from(
                from,
                Some(&root),
                Operation::Update,
                "cubbyhole/x",
                json!({"v": 1}),
            )
            .await
        }
    };
    call("127.0.0.1:1").await.expect("first");
    call("127.0.0.1:2").await.expect("second, same address");
    let e = call("127.0.0.1:3").await.expect_err("third");
    assert_eq!(e.http_status(), 429);
    assert!(
        e.to_string().contains("rate limit quota \"kv\" exceeded"),
        "{e}"
    );
    call("127.0.0.2:1").await.expect("another client");
    // Paths outside the quota, and the quota API itself, still work.
    t.ok(Operation::Read, "sys/mounts", json!({})).await;
    t.ok(Operation::Delete, "sys/quotas/rate-limit/kv", json!({}))
        .await;
    call("127.0.0.1:4").await.expect("lifted");
    let e = t
        .call(
            Operation::Update,
            "sys/quotas/rate-limit/bad",
            json!({"rate": 0}),
        )
        .await
        .expect_err("refused");
    assert_eq!(e.http_status(), 400);
}
