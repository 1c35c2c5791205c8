//! AppRole through the pipeline, on an in-memory node: logins, secret-ID
//! limits (uses, lifetime, source CIDRs), token options, and every refusal.

use serde_json::{Value, json};
use sigil_hsm::SecretString;

use crate::api_error::ApiError;
use crate::lease::LeaseSettings;
use crate::logical::{Operation, Response};
use crate::node_testing::TestNode;

async fn node_with_role(role: Value) -> (TestNode, String) {
    let t = TestNode::new(LeaseSettings::default()).await;
    t.ok(
        Operation::Update,
        "sys/auth/approle",
        json!({"type": "approle"}),
    )
    .await;
    t.ok(Operation::Update, "auth/approle/role/ci", role).await;
    let role_id = t
        .ok(Operation::Read, "auth/approle/role/ci/role-id", json!({}))
        .await
        .data
        .expect("data")["role_id"]
        .as_str()
        .expect("role_id")
        .to_owned();
    (t, role_id)
}

async fn secret_id(t: &TestNode, body: Value) -> (String, String) {
    let d = t
        .ok(Operation::Update, "auth/approle/role/ci/secret-id", body)
        .await
        .data
        .expect("data");
    (
        d["secret_id"].as_str().expect("secret_id").to_owned(),
        d["secret_id_accessor"]
            .as_str()
            .expect("accessor")
            .to_owned(),
    )
}

async fn login(
    t: &TestNode,
    from: &str,
    role_id: &str,
    secret_id: &str,
) -> Result<Response, ApiError> {
    t.call_from(
        from,
        None,
        Operation::Update,
        "auth/approle/login",
        json!({"role_id": role_id, "secret_id": secret_id}),
    )
    .await
}

#[tokio::test]
async fn a_login_issues_a_token_that_records_its_identity() {
    let (t, role_id) = node_with_role(json!({
        "token_policies": ["app"], "token_ttl": "20m", "token_max_ttl": "1h"
    }))
    .await;
    let (sid, accessor) = secret_id(&t, json!({"metadata": "{\"env\":\"ci\"}"})).await;
    let resp = login(&t, "127.0.0.1:5000", &role_id, &sid)
        .await
        .expect("login");
    let auth = resp.auth.expect("auth");
    assert_eq!(auth.policies, ["app", "default"]);
    assert_eq!(auth.lease_duration, 1200);
    assert!(auth.orphan);
    assert_eq!(auth.metadata["role_name"], "ci");
    assert_eq!(auth.metadata["env"], "ci");
    // The token works and says who it was issued to.
    let token = auth.client_token.clone();
    let me = t
        .call_as(&token, Operation::Read, "auth/token/lookup-self", json!({}))
        .await
        .expect("lookup")
        .data
        .expect("data");
    assert_eq!(me["identity"], "approle:ci");
    assert_eq!(me["role"], "ci");
    assert_eq!(me["path"], "auth/approle/login");
    assert!(
        me["auth_mount"]
            .as_str()
            .is_some_and(|a| a.starts_with("auth_approle_"))
    );
    // The secret ID can be looked up by value and by accessor, and listed.
    let by_value = t
        .ok(
            Operation::Update,
            "auth/approle/role/ci/secret-id/lookup",
            json!({"secret_id": sid}),
        )
        .await
        .data
        .expect("data");
    assert_eq!(by_value["secret_id_accessor"], accessor.as_str());
    assert_eq!(by_value["metadata"]["env"], "ci");
    let listed = t
        .ok(Operation::List, "auth/approle/role/ci/secret-id", json!({}))
        .await
        .data
        .expect("data");
    assert_eq!(listed["keys"], json!([accessor]));
    // Nothing stores a credential where storage keys could show it.
    let role = t
        .ok(Operation::Read, "auth/approle/role/ci", json!({}))
        .await
        .data
        .expect("data");
    assert_eq!(role["token_ttl"], 1200);
    assert_eq!(role["bind_secret_id"], true);
}

#[tokio::test]
async fn secret_ids_stop_working_after_their_uses_their_ttl_or_destruction() {
    let (t, role_id) = node_with_role(json!({"token_policies": "app"})).await;
    let (two, _) = secret_id(&t, json!({"num_uses": 2})).await;
    for _ in 0..2 {
        login(&t, "127.0.0.1:1", &role_id, &two)
            .await
            .expect("login");
    }
    let e = login(&t, "127.0.0.1:1", &role_id, &two)
        .await
        .expect_err("used up");
    assert_eq!(e.to_string(), "invalid role or secret ID");
    assert_eq!(e.http_status(), 400);

    let (dead, dead_acc) = secret_id(&t, json!({})).await;
    t.ok(
        Operation::Update,
        "auth/approle/role/ci/secret-id-accessor/destroy",
        json!({"secret_id_accessor": dead_acc}),
    )
    .await;
    assert!(login(&t, "127.0.0.1:1", &role_id, &dead).await.is_err());

    let (brief, _) = secret_id(&t, json!({"ttl": 1})).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let e = login(&t, "127.0.0.1:1", &role_id, &brief)
        .await
        .expect_err("expired");
    assert_eq!(e.to_string(), "invalid role or secret ID");

    // Wrong pairings are refused the same way.
    let (good, _) = secret_id(&t, json!({})).await;
    for (rid, sid) in [
        ("not-a-role-id", good.as_str()),
        (role_id.as_str(), "not-a-secret-id"),
        (role_id.as_str(), ""),
    ] {
        let e = login(&t, "127.0.0.1:1", rid, sid)
            .await
            .expect_err("refused");
        assert_eq!(e.http_status(), 400, "{rid} {sid}: {e}");
    }
    login(&t, "127.0.0.1:1", &role_id, &good)
        .await
        .expect("still fine");
}

#[tokio::test]
async fn cidr_bindings_hold_for_logins_and_for_the_tokens_they_issue() {
    let (t, role_id) = node_with_role(json!({
        "token_policies": "app",
        "secret_id_bound_cidrs": ["127.0.0.0/8"],
        "token_bound_cidrs": ["127.0.0.1/32"],
    }))
    .await;
    let (sid, _) = secret_id(&t, json!({"cidr_list": "127.0.0.2/32"})).await;
    let e = login(&t, "10.0.0.5:4000", &role_id, &sid)
        .await
        .expect_err("outside the role's blocks");
    assert!(
        e.to_string().contains("CIDR restrictions on the role"),
        "{e}"
    );
    let e = login(&t, "127.0.0.9:4000", &role_id, &sid)
        .await
        .expect_err("outside the secret ID's block");
    assert!(
        e.to_string().contains("CIDR restrictions on the secret ID"),
        "{e}"
    );
    let token = login(&t, "127.0.0.2:4000", &role_id, &sid)
        .await
        .expect("login")
        .auth
        .expect("auth")
        .client_token;
    // The token is bound to 127.0.0.1.
    let lookup = |from: &'static str, token: SecretString| {
        let t = &t;
        async move {
            t.call_from(
                from,
                Some(&token),
                Operation::Read,
                "auth/token/lookup-self",
                json!({}),
            )
            .await
        }
    };
    assert!(matches!(
        lookup("127.0.0.2:1", token.clone()).await,
        Err(ApiError::PermissionDenied)
    ));
    lookup("127.0.0.1:1", token).await.expect("from its block");
    // A secret ID's blocks must lie within the role's.
    let e = t
        .call(
            Operation::Update,
            "auth/approle/role/ci/secret-id",
            json!({"cidr_list": ["10.0.0.0/8"]}),
        )
        .await
        .expect_err("wider than the role");
    assert_eq!(e.http_status(), 400);
}

#[tokio::test]
async fn token_ttls_beyond_the_mount_maximum_are_capped_with_a_warning() {
    let (t, role_id) = node_with_role(json!({"token_policies": "app", "token_ttl": "3h"})).await;
    t.ok(
        Operation::Update,
        "sys/auth/approle/tune",
        json!({"max_lease_ttl": "1h"}),
    )
    .await;
    let (sid, _) = secret_id(&t, json!({})).await;
    let resp = login(&t, "127.0.0.1:1", &role_id, &sid)
        .await
        .expect("login");
    assert_eq!(resp.auth.expect("auth").lease_duration, 3600);
    assert!(
        resp.warnings.iter().any(|w| w.contains("capped")),
        "{:?}",
        resp.warnings
    );
}

#[tokio::test]
async fn bad_role_configuration_and_requests_are_refused_and_change_nothing() {
    let (t, role_id) = node_with_role(json!({"token_policies": "app"})).await;
    for (path, body) in [
        ("auth/approle/role/ci", json!({"token_policies": "root"})),
        ("auth/approle/role/ci", json!({"bind_secret_id": false})),
        (
            "auth/approle/role/ci",
            json!({"secret_id_bound_cidrs": "300.0.0.0/8"}),
        ),
        ("auth/approle/role/ci", json!({"token_type": "batch"})),
        ("auth/approle/role/ci", json!({"unknown_field": 1})),
        ("auth/approle/role/bad%20name", json!({})),
        (
            "auth/approle/role/ci/secret-id",
            json!({"metadata": "[1,2]"}),
        ),
        ("auth/approle/role/ci/custom-secret-id", json!({})),
        ("auth/approle/role/nope/secret-id", json!({})),
        ("auth/approle/login", json!({})),
    ] {
        let e = t
            .call(Operation::Update, path, body.clone())
            .await
            .expect_err(path);
        assert_eq!(e.http_status(), 400, "{path} {body}: {e}");
    }
    // Unchanged: the role still logs in as before.
    let (sid, _) = secret_id(&t, json!({})).await;
    let auth = login(&t, "127.0.0.1:1", &role_id, &sid)
        .await
        .expect("login")
        .auth
        .expect("auth");
    assert_eq!(auth.policies, ["app", "default"]);

    // A custom secret ID, then the same one again.
    t.ok(
        Operation::Update,
        "auth/approle/role/ci/custom-secret-id",
        json!({"secret_id": "my-own-secret-id"}),
    )
    .await;
    let e = t
        .call(
            Operation::Update,
            "auth/approle/role/ci/custom-secret-id",
            json!({"secret_id": "my-own-secret-id"}),
        )
        .await
        .expect_err("duplicate");
    assert_eq!(e.http_status(), 400);
    login(&t, "127.0.0.1:1", &role_id, "my-own-secret-id")
        .await
        .expect("custom secret ID logs in");

    // Role IDs are unique across roles.
    t.ok(Operation::Update, "auth/approle/role/other", json!({}))
        .await;
    let e = t
        .call(
            Operation::Update,
            "auth/approle/role/other/role-id",
            json!({"role_id": role_id}),
        )
        .await
        .expect_err("taken");
    assert_eq!(e.to_string(), "role_id already in use");

    // Deleting the role ends its logins.
    t.ok(Operation::Delete, "auth/approle/role/ci", json!({}))
        .await;
    assert!(login(&t, "127.0.0.1:1", &role_id, &sid).await.is_err());
    assert!(matches!(
        t.call(Operation::Read, "auth/approle/role/ci", json!({}))
            .await,
        Err(ApiError::NotFound(_))
    ));
}
