//! JWT and Kubernetes auth through the pipeline, on an in-memory node:
//! SPIFFE JWT-SVIDs and service-account tokens log in with the identity
//! they name, keys come inline, from a JWKS or through OIDC discovery, and
//! every refusal is a 400 that issues nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::lease::LeaseSettings;
use crate::logical::{Operation, Response};
use crate::node_testing::TestNode;

const ISSUER: &str = "https://spire.prod.example";
const SVID_SUB: &str = "spiffe://prod.example/ns/payments/sa/api";
const K8S_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

// ---- signing -----------------------------------------------------------------

/// RSA keys are slow to make, so the two are made once.
fn rsa(which: usize) -> &'static RsaKeyPair {
    static PAIRS: OnceLock<[RsaKeyPair; 2]> = OnceLock::new();
    &PAIRS.get_or_init(|| {
        [
            RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa"),
            RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa"),
        ]
    })[which]
}

fn p256() -> &'static EcdsaKeyPair {
    static PAIR: OnceLock<EcdsaKeyPair> = OnceLock::new();
    PAIR.get_or_init(|| EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("p256"))
}

fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

fn rsa_pem(which: usize) -> String {
    pem(rsa(which).public_key().as_der().expect("der").as_ref())
}

fn p256_pem() -> String {
    pem(p256().public_key().as_der().expect("der").as_ref())
}

fn rsa_jwk(which: usize, kid: &str) -> Value {
    let key = rsa(which).public_key();
    json!({
        "kty": "RSA", "kid": kid, "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(key.modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(key.exponent().big_endian_without_leading_zero()),
    })
}

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

/// Signs `claims` under `header`; `header.alg` picks RS256 (key `rsa(0)`,
/// or `rsa(1)` with `"other": true` in the call) or ES256.
fn sign_with(which_rsa: usize, header: Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64json(&header), b64json(claims));
    let sig = match header["alg"].as_str() {
        Some("RS256") => {
            let pair = rsa(which_rsa);
            let mut out = vec![0; pair.public_modulus_len()];
            pair.sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut out,
            )
            .expect("sign");
            out
        }
        Some("ES256") => p256()
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign")
            .as_ref()
            .to_vec(),
        other => panic!("no test signer for {other:?}"),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn rs256(claims: &Value) -> String {
    sign_with(0, json!({"alg": "RS256", "typ": "JWT"}), claims)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A JWT-SVID (JWT-SVID.md §3) for the payments API, valid for 5 minutes.
fn svid() -> Value {
    let now = now();
    json!({"sub": SVID_SUB, "aud": ["sigil"], "iss": ISSUER, "exp": now + 300, "iat": now})
}

/// A projected service-account token as the kubelet gets it.
fn k8s_token(namespace: &str, name: &str) -> Value {
    let now = now();
    json!({
        "aud": ["sigil"], "iss": K8S_ISSUER, "exp": now + 600, "iat": now, "nbf": now,
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": format!("{name}-7d9f8"), "uid": "1b2c"},
            "serviceaccount": {"name": name, "uid": "9e8d"},
        },
    })
}

// ---- node helpers --------------------------------------------------------------

async fn node() -> TestNode {
    TestNode::new(LeaseSettings::default()).await
}

async fn mount(t: &TestNode, kind: &str) {
    t.ok(
        Operation::Update,
        &format!("sys/auth/{kind}"),
        json!({ "type": kind }),
    )
    .await;
}

/// A `jwt` mount trusting the RSA and P-256 keys, with role `payments`.
async fn spiffe_node() -> TestNode {
    let t = node().await;
    mount(&t, "jwt").await;
    t.ok(
        Operation::Update,
        "auth/jwt/config",
        json!({"jwt_validation_pubkeys": [rsa_pem(0), p256_pem()], "bound_issuer": ISSUER}),
    )
    .await;
    t.ok(
        Operation::Update,
        "auth/jwt/role/payments",
        json!({
            "bound_subject": "spiffe://prod.example/ns/payments/*",
            "bound_audiences": ["sigil"],
            "token_policies": ["payments"],
            "token_ttl": "10m",
        }),
    )
    .await;
    t
}

/// A `kubernetes` mount trusting the RSA key, with role `api`.
async fn kubernetes_node() -> TestNode {
    let t = node().await;
    mount(&t, "kubernetes").await;
    t.ok(
        Operation::Update,
        "auth/kubernetes/config",
        json!({"jwt_validation_pubkeys": rsa_pem(0), "bound_issuer": K8S_ISSUER}),
    )
    .await;
    t.ok(
        Operation::Update,
        "auth/kubernetes/role/api",
        json!({
            "bound_service_account_names": ["api"],
            "bound_service_account_namespaces": ["payments"],
            "bound_audiences": "sigil",
            "token_policies": "payments-api",
        }),
    )
    .await;
    t
}

async fn login(t: &TestNode, mount: &str, body: Value) -> Result<Response, ApiError> {
    t.call_from(
        "127.0.0.1:40000",
        None,
        Operation::Update,
        &format!("auth/{mount}/login"),
        body,
    )
    .await
}

async fn token_count(t: &TestNode) -> usize {
    t.ok(Operation::List, "auth/token/accessors", json!({}))
        .await
        .data
        .expect("data")["keys"]
        .as_array()
        .expect("keys")
        .len()
}

/// The login is a 400 whose message contains `reason` (and not the token),
/// and no token was issued.
async fn assert_refused(t: &TestNode, mount: &str, role: &str, jwt: &str, reason: &str) {
    let before = token_count(t).await;
    let e = login(t, mount, json!({"role": role, "jwt": jwt}))
        .await
        .expect_err("login must be refused");
    let message = e.to_string();
    assert_eq!(e.http_status(), 400, "{message}");
    assert!(message.contains(reason), "{message:?} lacks {reason:?}");
    assert!(!message.contains(jwt), "the error echoes the token");
    assert_eq!(token_count(t).await, before, "a token was issued");
}

async fn lookup_self(t: &TestNode, resp: Response) -> Value {
    let token = resp.auth.expect("auth").client_token;
    Value::Object(
        t.call_as(&token, Operation::Read, "auth/token/lookup-self", json!({}))
            .await
            .expect("lookup-self")
            .data
            .expect("data"),
    )
}

// ---- logins ----------------------------------------------------------------------

#[tokio::test]
async fn spiffe_jwt_svids_log_in_with_rs256_and_es256() {
    let t = spiffe_node().await;
    for header in [json!({"alg": "RS256"}), json!({"alg": "ES256", "kid": "x"})] {
        let jwt = sign_with(0, header.clone(), &svid());
        let resp = login(&t, "jwt", json!({"role": "payments", "jwt": jwt}))
            .await
            .unwrap_or_else(|e| panic!("{header}: {e}"));
        let auth = resp.auth.clone().expect("auth");
        assert_eq!(auth.policies, ["default", "payments"]);
        assert_eq!(auth.lease_duration, 600);
        assert_eq!(auth.metadata["role"], "payments");
        let me = lookup_self(&t, resp).await;
        assert_eq!(me["identity"], SVID_SUB, "{header}");
        assert_eq!(me["policies"], json!(["default", "payments"]));
        assert_eq!(me["role"], "payments");
        assert_eq!(me["path"], "auth/jwt/login");
        assert_eq!(
            me["display_name"],
            "jwt-spiffe---prod-example-ns-payments-sa-api"
        );
    }
    // The role reads back with its defaults.
    let role = t
        .ok(Operation::Read, "auth/jwt/role/payments", json!({}))
        .await
        .data
        .expect("data");
    assert_eq!(role["user_claim"], "sub");
    assert_eq!(role["clock_skew_leeway"], 60);
    assert_eq!(role["token_policies"], json!(["payments"]));
    let listed = t.ok(Operation::List, "auth/jwt/role", json!({})).await;
    assert_eq!(listed.data.expect("data")["keys"], json!(["payments"]));
}

#[tokio::test]
async fn kubernetes_service_account_tokens_log_in_as_namespace_and_name() {
    let t = kubernetes_node().await;
    let jwt = sign_with(
        0,
        json!({"alg": "RS256", "kid": "k8s-2024"}),
        &k8s_token("payments", "api"),
    );
    let resp = login(&t, "kubernetes", json!({"role": "api", "jwt": jwt}))
        .await
        .expect("login");
    let auth = resp.auth.clone().expect("auth");
    assert_eq!(auth.metadata["service_account_namespace"], "payments");
    assert_eq!(auth.metadata["service_account_name"], "api");
    let me = lookup_self(&t, resp).await;
    assert_eq!(me["identity"], "kubernetes:payments/api");
    assert_eq!(me["policies"], json!(["default", "payments-api"]));
    assert_eq!(
        me["display_name"],
        "kubernetes-system-serviceaccount-payments-api"
    );
    let role = t
        .ok(Operation::Read, "auth/kubernetes/role/api", json!({}))
        .await
        .data
        .expect("data");
    assert_eq!(role["bound_service_account_names"], json!(["api"]));
}

#[tokio::test]
async fn other_tokens_are_named_by_issuer_and_user_claim_and_default_role_applies() {
    let t = node().await;
    mount(&t, "jwt").await;
    t.ok(
        Operation::Update,
        "auth/jwt/config",
        json!({"jwt_validation_pubkeys": [rsa_pem(0)], "default_role": "people",
               "jwt_supported_algs": ["RS256"]}),
    )
    .await;
    t.ok(
        Operation::Update,
        "auth/jwt/role/people",
        json!({"bound_audiences": "sigil", "user_claim": "email",
               "claim_mappings": {"/org/team": "team"}}),
    )
    .await;
    let mut claims = svid();
    claims["sub"] = json!("user-42");
    claims["email"] = json!("ada@example.com");
    claims["org"] = json!({"team": "payments"});
    let resp = login(&t, "jwt", json!({"jwt": rs256(&claims)}))
        .await
        .expect("login with the default role");
    assert_eq!(
        resp.auth.clone().expect("auth").metadata["team"],
        "payments"
    );
    let me = lookup_self(&t, resp).await;
    assert_eq!(me["identity"], format!("jwt:{ISSUER}#ada@example.com"));
    assert_eq!(me["role"], "people");
    // ES256 is outside jwt_supported_algs.
    t.ok(
        Operation::Update,
        "auth/jwt/config",
        json!({"jwt_validation_pubkeys": [rsa_pem(0), p256_pem()],
               "jwt_supported_algs": "RS256"}),
    )
    .await;
    let es = sign_with(0, json!({"alg": "ES256"}), &claims);
    assert_refused(
        &t,
        "jwt",
        "people",
        &es,
        "algorithm \"ES256\" is not allowed",
    )
    .await;
}

// ---- remote keys -------------------------------------------------------------------

/// Serves a JWKS at `/jwks` and a discovery document naming this server as
/// issuer, counting JWKS requests.
async fn key_server(jwks: Value) -> (String, Arc<AtomicUsize>) {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let jwks_hits = hits.clone();
    let discovery = json!({"issuer": base, "jwks_uri": format!("{base}/jwks")});
    let app = axum::Router::new()
        .route(
            "/jwks",
            get(move || {
                jwks_hits.fetch_add(1, Ordering::SeqCst);
                let body = jwks.clone();
                async move { axum::Json(body) }
            }),
        )
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let body = discovery.clone();
                async move { axum::Json(body) }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, hits)
}

#[tokio::test]
async fn a_jwks_is_fetched_from_a_loopback_server_and_cached() {
    let (base, hits) = key_server(json!({"keys": [rsa_jwk(0, "spire-1")]})).await;
    let t = node().await;
    mount(&t, "jwt").await;
    t.ok(
        Operation::Update,
        "auth/jwt/config",
        json!({"jwks_url": format!("{base}/jwks"), "bound_issuer": ISSUER}),
    )
    .await;
    // Fetched once when written, to check it.
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    t.ok(
        Operation::Update,
        "auth/jwt/role/payments",
        json!({"bound_subject": "spiffe://prod.example/ns/payments/*",
               "bound_audiences": "sigil"}),
    )
    .await;
    for _ in 0..2 {
        let jwt = sign_with(0, json!({"alg": "RS256", "kid": "spire-1"}), &svid());
        let me = lookup_self(
            &t,
            login(&t, "jwt", json!({"role": "payments", "jwt": jwt}))
                .await
                .expect("login"),
        )
        .await;
        assert_eq!(me["identity"], SVID_SUB);
    }
    // Both logins used the cached keys.
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // A kid the JWKS lacks is refused (the refetch it triggers is rate
    // limited; keys.rs tests that rule).
    let unknown = sign_with(0, json!({"alg": "RS256", "kid": "spire-9"}), &svid());
    assert_refused(&t, "jwt", "payments", &unknown, "no configured key has kid").await;
}

#[tokio::test]
async fn oidc_discovery_binds_tokens_to_the_discovered_issuer() {
    let (base, _) = key_server(json!({"keys": [rsa_jwk(0, "idp-1")]})).await;
    let t = node().await;
    mount(&t, "jwt").await;
    t.ok(
        Operation::Update,
        "auth/jwt/config",
        json!({"oidc_discovery_url": base}),
    )
    .await;
    t.ok(
        Operation::Update,
        "auth/jwt/role/app",
        json!({"bound_audiences": "sigil"}),
    )
    .await;
    let mut claims = svid();
    claims["iss"] = json!(base);
    claims["sub"] = json!("app-1");
    let jwt = sign_with(0, json!({"alg": "RS256", "kid": "idp-1"}), &claims);
    let me = lookup_self(
        &t,
        login(&t, "jwt", json!({"role": "app", "jwt": jwt}))
            .await
            .expect("login"),
    )
    .await;
    assert_eq!(me["identity"], format!("jwt:{base}#app-1"));
    // Signed by the same key, but claiming another issuer.
    claims["iss"] = json!("https://other.example");
    let jwt = sign_with(0, json!({"alg": "RS256", "kid": "idp-1"}), &claims);
    assert_refused(&t, "jwt", "app", &jwt, "issuer claim does not match").await;
}

#[tokio::test]
async fn key_urls_must_be_https_or_loopback_and_fetch_failures_are_upstream_errors() {
    let t = node().await;
    mount(&t, "jwt").await;
    let e = t
        .call(
            Operation::Update,
            "auth/jwt/config",
            json!({"jwks_url": "http://keys.example/jwks"}),
        )
        .await
        .expect_err("plain http to another host");
    assert_eq!(e.http_status(), 400, "{e}");
    assert!(e.to_string().contains("must be https://"), "{e}");

    // A loopback port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let e = t
        .call(
            Operation::Update,
            "auth/jwt/config",
            json!({"jwks_url": format!("http://127.0.0.1:{port}/jwks")}),
        )
        .await
        .expect_err("nothing listening");
    assert_eq!(e.http_status(), 502, "{e}");
    assert!(e.to_string().contains("fetching keys from"), "{e}");
    assert!(matches!(
        t.call(Operation::Read, "auth/jwt/config", json!({})).await,
        Err(ApiError::NotFound(_))
    ));
}

// ---- refusals ----------------------------------------------------------------------

#[tokio::test]
async fn alg_none_is_refused() {
    let t = spiffe_node().await;
    let jwt = format!("{}.{}.", b64json(&json!({"alg": "none"})), b64json(&svid()));
    assert_refused(&t, "jwt", "payments", &jwt, "alg \"none\"").await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let t = spiffe_node().await;
    let input = format!(
        "{}.{}",
        b64json(&json!({"alg": "HS256", "typ": "JWT"})),
        b64json(&svid())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, rsa_pem(0).as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    let jwt = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    assert_refused(
        &t,
        "jwt",
        "payments",
        &jwt,
        "symmetric algorithm \"HS256\" is not accepted",
    )
    .await;
}

#[tokio::test]
async fn expired_tokens_are_refused_unless_the_leeway_covers_them() {
    let t = spiffe_node().await;
    let mut claims = svid();
    claims["exp"] = json!(now() - 120);
    claims["iat"] = json!(now() - 420);
    let jwt = rs256(&claims);
    assert_refused(&t, "jwt", "payments", &jwt, "token has expired").await;
    // 60 s of clock skew plus 2 minutes of expiration leeway covers it.
    t.ok(
        Operation::Update,
        "auth/jwt/role/lenient",
        json!({"bound_audiences": "sigil", "expiration_leeway": "2m"}),
    )
    .await;
    login(&t, "jwt", json!({"role": "lenient", "jwt": jwt}))
        .await
        .expect("within the leeway");
}

#[tokio::test]
async fn not_yet_valid_tokens_are_refused() {
    let t = spiffe_node().await;
    let mut claims = svid();
    claims["nbf"] = json!(now() + 600);
    claims["exp"] = json!(now() + 900);
    assert_refused(
        &t,
        "jwt",
        "payments",
        &rs256(&claims),
        "token is not yet valid",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_audience_is_refused() {
    let t = spiffe_node().await;
    let mut claims = svid();
    claims["aud"] = json!(["billing"]);
    assert_refused(
        &t,
        "jwt",
        "payments",
        &rs256(&claims),
        "audience claim does not match any bound audience",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_issuer_is_refused() {
    let t = spiffe_node().await;
    let mut claims = svid();
    claims["iss"] = json!("https://spire.staging.example");
    assert_refused(
        &t,
        "jwt",
        "payments",
        &rs256(&claims),
        "issuer claim does not match the bound issuer",
    )
    .await;
}

#[tokio::test]
async fn a_subject_outside_the_glob_is_refused() {
    let t = spiffe_node().await;
    let mut claims = svid();
    claims["sub"] = json!("spiffe://prod.example/ns/billing/sa/api");
    assert_refused(
        &t,
        "jwt",
        "payments",
        &rs256(&claims),
        "subject claim does not match the bound subject",
    )
    .await;
}

#[tokio::test]
async fn a_bound_claims_mismatch_is_refused() {
    let t = spiffe_node().await;
    t.ok(
        Operation::Update,
        "auth/jwt/role/ops",
        json!({"bound_audiences": "sigil", "bound_claims_type": "glob",
               "bound_claims": {"/env/tier": ["prod-*"]}}),
    )
    .await;
    let mut claims = svid();
    claims["env"] = json!({"tier": "prod-eu"});
    login(&t, "jwt", json!({"role": "ops", "jwt": rs256(&claims)}))
        .await
        .expect("matching claim");
    claims["env"] = json!({"tier": "staging"});
    assert_refused(
        &t,
        "jwt",
        "ops",
        &rs256(&claims),
        "claim \"/env/tier\" does not match any associated bound claim values",
    )
    .await;
}

#[tokio::test]
async fn an_unknown_role_is_refused() {
    let t = spiffe_node().await;
    assert_refused(
        &t,
        "jwt",
        "nope",
        &rs256(&svid()),
        "role \"nope\" could not be found",
    )
    .await;
}

#[tokio::test]
async fn a_token_signed_by_another_key_is_refused() {
    let t = spiffe_node().await;
    let jwt = sign_with(1, json!({"alg": "RS256"}), &svid());
    assert_refused(
        &t,
        "jwt",
        "payments",
        &jwt,
        "token signature verification failed",
    )
    .await;
}

#[tokio::test]
async fn a_service_account_outside_the_bound_names_is_refused() {
    let t = kubernetes_node().await;
    let batch = sign_with(0, json!({"alg": "RS256"}), &k8s_token("payments", "batch"));
    assert_refused(
        &t,
        "kubernetes",
        "api",
        &batch,
        "service account name not authorized",
    )
    .await;
    let other_ns = sign_with(0, json!({"alg": "RS256"}), &k8s_token("billing", "api"));
    assert_refused(
        &t,
        "kubernetes",
        "api",
        &other_ns,
        "namespace not authorized",
    )
    .await;
    // The kubernetes.io claim and the subject must agree.
    let mut forged = k8s_token("payments", "api");
    forged["sub"] = json!("system:serviceaccount:billing:admin");
    let forged = sign_with(0, json!({"alg": "RS256"}), &forged);
    assert_refused(
        &t,
        "kubernetes",
        "api",
        &forged,
        "name different service accounts",
    )
    .await;
}

#[tokio::test]
async fn config_needs_exactly_one_key_source() {
    let t = spiffe_node().await;
    let before = t
        .ok(Operation::Read, "auth/jwt/config", json!({}))
        .await
        .data;
    for (body, reason) in [
        (json!({"bound_issuer": ISSUER}), "none is"),
        (
            json!({"jwt_validation_pubkeys": [rsa_pem(0)],
                   "jwks_url": "https://spire.prod.example/keys"}),
            "not jwt_validation_pubkeys and jwks_url",
        ),
        (
            json!({"jwt_validation_pubkeys": ["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"]}),
            "jwt_validation_pubkeys[0]",
        ),
        (
            json!({"jwt_validation_pubkeys": [rsa_pem(0)], "jwt_supported_algs": ["HS256"]}),
            "symmetric algorithm",
        ),
        (
            json!({"jwt_validation_pubkeys": [rsa_pem(0)], "oidc_client_id": "sigil"}),
            "browser OIDC",
        ),
    ] {
        let e = t
            .call(Operation::Update, "auth/jwt/config", body.clone())
            .await
            .expect_err("refused");
        assert_eq!(e.http_status(), 400, "{body}: {e}");
        assert!(e.to_string().contains(reason), "{body}: {e}");
    }
    let after = t
        .ok(Operation::Read, "auth/jwt/config", json!({}))
        .await
        .data;
    assert_eq!(before, after, "a refused write changed the config");
    login(
        &t,
        "jwt",
        json!({"role": "payments", "jwt": rs256(&svid())}),
    )
    .await
    .expect("logins still work");
}

#[tokio::test]
async fn a_role_without_binding_is_refused() {
    let t = spiffe_node().await;
    for (body, reason) in [
        (
            json!({"token_policies": "admin"}),
            "at least one bound constraint",
        ),
        (
            json!({"bound_subject": "*", "token_policies": "admin"}),
            "at least one bound constraint",
        ),
        (
            json!({"role_type": "oidc", "bound_audiences": "sigil"}),
            "browser OIDC login flows are not offered",
        ),
    ] {
        let e = t
            .call(Operation::Update, "auth/jwt/role/open", body.clone())
            .await
            .expect_err("refused");
        assert_eq!(e.http_status(), 400, "{body}: {e}");
        assert!(e.to_string().contains(reason), "{body}: {e}");
    }
    assert!(matches!(
        t.call(Operation::Read, "auth/jwt/role/open", json!({}))
            .await,
        Err(ApiError::NotFound(_))
    ));
    assert_refused(
        &t,
        "jwt",
        "open",
        &rs256(&svid()),
        "role \"open\" could not be found",
    )
    .await;
    // Removing the last binding from an existing role is refused too.
    let e = t
        .call(
            Operation::Update,
            "auth/jwt/role/payments",
            json!({"bound_subject": "", "bound_audiences": []}),
        )
        .await
        .expect_err("unbinding");
    assert_eq!(e.http_status(), 400);
}
