//! Remote verification keys: a JWKS fetched from `jwks_url`, or found
//! through OpenID Connect discovery (`oidc_discovery_url`), cached in memory
//! per mount (docs/auth.md, "Key sources").
//!
//! The fetch itself is behind [`Fetch`] so the cache rules (how long keys
//! live, when an unknown `kid` may trigger a refetch) are tested without a
//! network; [`HttpFetch`] is the real one.
//!
//! Only `https://` URLs are fetched, with one exception: `http://` to a
//! loopback IP literal (`127.0.0.0/8`, `[::1]`), where the request never
//! leaves the host, for a local agent that serves its trust bundle that way.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::Url;
use serde::Deserialize;

use super::verify::VerifyingKey;

/// How long fetched keys are used before they are fetched again.
pub const CACHE_SECS: i64 = 300;
/// A token naming a `kid` the cached keys lack triggers a refetch (the
/// issuer may have rotated), but at most this often per mount, so
/// unauthenticated callers cannot make us hammer the issuer.
pub const MIN_REFETCH_SECS: i64 = 30;
/// Larger key documents are refused; real ones are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 5;
/// OpenID Connect Discovery 1.0 §4.
const WELL_KNOWN: &str = "/.well-known/openid-configuration";

/// A URL keys may be fetched from: `https://`, or `http://` to a loopback
/// IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUrl(Url);

impl KeyUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        Self::check(url)
    }

    fn check(url: Url) -> Result<Self, String> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{url} must not carry credentials"));
        }
        match url.scheme() {
            "https" if url.host().is_some() => Ok(Self(url)),
            "http" if is_loopback(&url) => Ok(Self(url)),
            _ => Err(format!(
                "{url} must be https:// (plain http:// is allowed only to 127.0.0.1 or [::1])"
            )),
        }
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    fn is_loopback(&self) -> bool {
        is_loopback(&self.0)
    }
}

impl fmt::Display for KeyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Loopback by IP literal only: a name such as `localhost` goes through a
/// resolver we do not control.
fn is_loopback(url: &Url) -> bool {
    url.host_str()
        .map(|host| host.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|host| host.parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

/// Where a mount's keys come from, when they are not configured inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Jwks { url: KeyUrl, ca_pem: Option<String> },
    Discovery { url: KeyUrl, ca_pem: Option<String> },
}

impl Remote {
    fn url(&self) -> &KeyUrl {
        match self {
            Remote::Jwks { url, .. } | Remote::Discovery { url, .. } => url,
        }
    }
}

/// Keys fetched from a [`Remote`].
#[derive(Debug, Clone)]
pub struct Fetched {
    pub keys: Arc<Vec<VerifyingKey>>,
    /// The issuer a discovery document declared, which tokens must carry.
    pub issuer: Option<String>,
}

/// Fetches one document. `ca_pem`, when given, is the only trust anchor.
pub trait Fetch: Send + Sync + fmt::Debug {
    fn get<'a>(
        &'a self,
        url: &'a KeyUrl,
        ca_pem: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<u8>, String>>;
}

/// When [`KeyCache::keys`] may answer from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Cached keys younger than [`CACHE_SECS`] do.
    IfStale,
    /// A token named a `kid` the keys lack: refetch unless the keys are
    /// younger than [`MIN_REFETCH_SECS`].
    UnknownKid,
    /// Fetch now (configuration was just written).
    Always,
}

#[derive(Debug)]
struct Cached {
    remote: Remote,
    fetched: Fetched,
    fetched_unix: i64,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// Keys per mount, each behind its own lock so one mount's slow issuer
/// delays only that mount's logins, and concurrent logins share one fetch.
#[derive(Debug)]
pub struct KeyCache {
    fetcher: Arc<dyn Fetch>,
    slots: Mutex<HashMap<String, Slot>>,
}

impl KeyCache {
    pub fn new(fetcher: Arc<dyn Fetch>) -> Self {
        Self {
            fetcher,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The keys of `remote` for `mount` at `now` (Unix seconds).
    pub async fn keys(
        &self,
        mount: &str,
        remote: &Remote,
        now: i64,
        refresh: Refresh,
    ) -> Result<Fetched, String> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.entry(mount.to_owned()).or_default().clone()
        };
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| c.remote == *remote) {
            let age = now.saturating_sub(c.fetched_unix);
            let fresh_for = match refresh {
                Refresh::IfStale => CACHE_SECS,
                Refresh::UnknownKid => MIN_REFETCH_SECS,
                Refresh::Always => 0,
            };
            // A clock that went backwards makes the keys stale, not fresh.
            if (0..fresh_for).contains(&age) {
                return Ok(c.fetched.clone());
            }
        }
        let fetched = self.fetch(remote).await.map_err(|reason| {
            tracing::warn!(url = %remote.url(), error = %reason, "jwt key fetch failed");
            format!("fetching keys from {}: {reason}", remote.url())
        })?;
        *cached = Some(Cached {
            remote: remote.clone(),
            fetched: fetched.clone(),
            fetched_unix: now,
        });
        Ok(fetched)
    }

    /// Forgets a mount's keys (its configuration changed).
    pub fn forget(&self, mount: &str) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(mount);
    }

    async fn fetch(&self, remote: &Remote) -> Result<Fetched, String> {
        match remote {
            Remote::Jwks { url, ca_pem } => {
                let keys = self.jwks(url, ca_pem.as_deref()).await?;
                Ok(Fetched { keys, issuer: None })
            }
            Remote::Discovery { url, ca_pem } => {
                let (issuer, jwks_uri) = self.discover(url, ca_pem.as_deref()).await?;
                let keys = self.jwks(&jwks_uri, ca_pem.as_deref()).await?;
                Ok(Fetched {
                    keys,
                    issuer: Some(issuer),
                })
            }
        }
    }

    async fn jwks(
        &self,
        url: &KeyUrl,
        ca_pem: Option<&str>,
    ) -> Result<Arc<Vec<VerifyingKey>>, String> {
        let body = self.fetcher.get(url, ca_pem).await?;
        let text = std::str::from_utf8(&body).map_err(|_| "JWKS is not UTF-8".to_owned())?;
        VerifyingKey::from_jwks(text)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    /// OpenID Connect Discovery 1.0 §4: the document lives under the issuer
    /// URL, and its `issuer` must be that URL (§4.3), which stops one
    /// issuer's document from vouching for another's tokens.
    async fn discover(
        &self,
        issuer_url: &KeyUrl,
        ca_pem: Option<&str>,
    ) -> Result<(String, KeyUrl), String> {
        #[derive(Deserialize)]
        struct Document {
            issuer: String,
            jwks_uri: String,
        }
        let base = issuer_url.as_url().as_str().trim_end_matches('/');
        let well_known = KeyUrl::parse(&format!("{base}{WELL_KNOWN}"))?;
        let body = self.fetcher.get(&well_known, ca_pem).await?;
        let doc: Document = serde_json::from_slice(&body).map_err(|_| {
            "discovery document is not JSON with string \"issuer\" and \"jwks_uri\"".to_owned()
        })?;
        if doc.issuer.trim_end_matches('/') != base {
            return Err(format!(
                "discovery document names issuer {:?}, not {base:?}",
                doc.issuer
            ));
        }
        let jwks_uri = KeyUrl::parse(&doc.jwks_uri).map_err(|e| format!("jwks_uri: {e}"))?;
        Ok((doc.issuer, jwks_uri))
    }
}

/// [`Fetch`] over HTTPS with reqwest on rustls (aws-lc-rs): the system
/// roots, or only the configured CA when there is one.
#[derive(Debug, Default)]
pub struct HttpFetch {
    /// The client trusting the system roots, built on first use because
    /// loading the roots reads the filesystem.
    native: OnceLock<reqwest::Client>,
}

impl HttpFetch {
    pub fn new() -> Self {
        Self::default()
    }

    fn client(&self, url: &KeyUrl, ca_pem: Option<&str>) -> Result<reqwest::Client, String> {
        match ca_pem {
            Some(pem) => build_client(Some(pem), url.is_loopback()),
            // A loopback URL gets its own client so no proxy is used for it.
            None if url.is_loopback() => build_client(None, true),
            None => {
                if let Some(client) = self.native.get() {
                    return Ok(client.clone());
                }
                let client = build_client(None, false)?;
                Ok(self.native.get_or_init(|| client).clone())
            }
        }
    }
}

impl Fetch for HttpFetch {
    fn get<'a>(
        &'a self,
        url: &'a KeyUrl,
        ca_pem: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let client = self.client(url, ca_pem)?;
            let mut resp = client
                .get(url.as_url().clone())
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(describe)?;
            if !resp.status().is_success() {
                return Err(format!("answered HTTP {}", resp.status().as_u16()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(describe)? {
                if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                    return Err("document is larger than 1 MiB".into());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        })
    }
}

/// A client trusting `ca_pem` only, or the system roots. Redirects are
/// followed only to URLs [`KeyUrl`] accepts, so a redirect cannot downgrade
/// the fetch to plain HTTP.
fn build_client(ca_pem: Option<&str>, no_proxy: bool) -> Result<reqwest::Client, String> {
    let roots = match ca_pem {
        Some(pem) => ca_roots(pem)?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                // Unparseable system roots are skipped, as browsers do.
                let _ = roots.add(cert);
            }
            roots
        }
    };
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if let Err(e) = KeyUrl::check(attempt.url().clone()) {
            attempt.error(format!("redirect refused: {e}"))
        } else {
            attempt.follow()
        }
    });
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(FETCH_TIMEOUT)
        .redirect(redirects);
    if no_proxy {
        builder = builder.no_proxy();
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// The trust anchors of a `*_ca_pem` option: one or more PEM certificates.
pub fn ca_roots(pem: &str) -> Result<rustls::RootCertStore, String> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM CERTIFICATE block".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    Ok(roots)
}

/// reqwest's error with its causes, which say what actually went wrong
/// (refused connection, certificate problem, timeout).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    /// Serves fixed documents by URL and counts requests.
    #[derive(Debug, Default)]
    struct MemoryFetch {
        docs: Mutex<HashMap<String, Vec<u8>>>,
        calls: AtomicUsize,
    }

    impl MemoryFetch {
        fn serve(&self, url: &str, body: String) {
            self.docs
                .lock()
                .unwrap()
                .insert(url.to_owned(), body.into_bytes());
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Fetch for MemoryFetch {
        fn get<'a>(
            &'a self,
            url: &'a KeyUrl,
            _ca_pem: Option<&'a str>,
        ) -> BoxFuture<'a, Result<Vec<u8>, String>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let found = self
                .docs
                .lock()
                .unwrap()
                .get(url.as_url().as_str())
                .cloned();
            Box::pin(async move { found.ok_or_else(|| "answered HTTP 404".to_owned()) })
        }
    }

    fn jwks(kid: &str) -> String {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = pair.public_key().as_ref();
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..])}]})
        .to_string()
    }

    fn setup() -> (Arc<MemoryFetch>, KeyCache, Remote) {
        let fetch = Arc::new(MemoryFetch::default());
        fetch.serve("https://issuer.example/jwks", jwks("one"));
        let cache = KeyCache::new(fetch.clone());
        let remote = Remote::Jwks {
            url: KeyUrl::parse("https://issuer.example/jwks").unwrap(),
            ca_pem: None,
        };
        (fetch, cache, remote)
    }

    #[test]
    fn only_https_or_loopback_http_is_fetched() {
        for ok in [
            "https://issuer.example/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://127.3.4.5/keys",
            "http://[::1]:9/jwks",
        ] {
            assert!(KeyUrl::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://issuer.example/jwks",
            "http://localhost/jwks",
            "http://10.0.0.1/jwks",
            "http://127.0.0.1.nip.io/jwks",
            "ftp://issuer.example/jwks",
            "file:///etc/jwks.json",
            "https://user:pw@issuer.example/jwks",
            "issuer.example/jwks",
        ] {
            assert!(KeyUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn keys_are_cached_for_a_while_per_mount() {
        let (fetch, cache, remote) = setup();
        let first = cache
            .keys("m1/", &remote, 1000, Refresh::IfStale)
            .await
            .unwrap();
        let again = cache
            .keys("m1/", &remote, 1000 + CACHE_SECS - 1, Refresh::IfStale)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first.keys, &again.keys));
        assert_eq!(fetch.calls(), 1);
        // Another mount has its own entry.
        cache
            .keys("m2/", &remote, 1000, Refresh::IfStale)
            .await
            .unwrap();
        assert_eq!(fetch.calls(), 2);
        // Old keys, a clock that went backwards, or a changed source refetch.
        cache
            .keys("m1/", &remote, 1000 + CACHE_SECS, Refresh::IfStale)
            .await
            .unwrap();
        assert_eq!(fetch.calls(), 3);
        cache
            .keys("m1/", &remote, 10, Refresh::IfStale)
            .await
            .unwrap();
        assert_eq!(fetch.calls(), 4);
        let other = Remote::Jwks {
            url: KeyUrl::parse("https://issuer.example/jwks").unwrap(),
            ca_pem: Some("pem".into()),
        };
        cache
            .keys("m1/", &other, 10, Refresh::IfStale)
            .await
            .unwrap();
        assert_eq!(fetch.calls(), 5);
        cache.forget("m1/");
        cache
            .keys("m1/", &other, 10, Refresh::IfStale)
            .await
            .unwrap();
        assert_eq!(fetch.calls(), 6);
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_at_most_every_thirty_seconds() {
        let (fetch, cache, remote) = setup();
        cache
            .keys("m/", &remote, 1000, Refresh::IfStale)
            .await
            .unwrap();
        let early = cache
            .keys(
                "m/",
                &remote,
                1000 + MIN_REFETCH_SECS - 1,
                Refresh::UnknownKid,
            )
            .await
            .unwrap();
        assert_eq!(fetch.calls(), 1);
        assert_eq!(early.keys[0].kid(), Some("one"));
        fetch.serve("https://issuer.example/jwks", jwks("two"));
        let rotated = cache
            .keys("m/", &remote, 1000 + MIN_REFETCH_SECS, Refresh::UnknownKid)
            .await
            .unwrap();
        assert_eq!(fetch.calls(), 2);
        assert_eq!(rotated.keys[0].kid(), Some("two"));
    }

    #[tokio::test]
    async fn discovery_must_name_its_own_issuer() {
        let fetch = Arc::new(MemoryFetch::default());
        let cache = KeyCache::new(fetch.clone());
        let remote = Remote::Discovery {
            url: KeyUrl::parse("https://issuer.example/tenant").unwrap(),
            ca_pem: None,
        };
        let doc = |issuer: &str, jwks_uri: &str| {
            json!({"issuer": issuer, "jwks_uri": jwks_uri}).to_string()
        };
        let well_known = "https://issuer.example/tenant/.well-known/openid-configuration";
        fetch.serve("https://issuer.example/keys", jwks("k"));

        fetch.serve(
            well_known,
            doc(
                "https://issuer.example/tenant",
                "https://issuer.example/keys",
            ),
        );
        let found = cache.keys("m/", &remote, 0, Refresh::Always).await.unwrap();
        assert_eq!(
            found.issuer.as_deref(),
            Some("https://issuer.example/tenant")
        );
        assert_eq!(found.keys.len(), 1);

        fetch.serve(
            well_known,
            doc("https://evil.example", "https://issuer.example/keys"),
        );
        let e = cache
            .keys("m/", &remote, 0, Refresh::Always)
            .await
            .unwrap_err();
        assert!(e.contains("names issuer"), "{e}");

        fetch.serve(
            well_known,
            doc(
                "https://issuer.example/tenant",
                "http://issuer.example/keys",
            ),
        );
        let e = cache
            .keys("m/", &remote, 0, Refresh::Always)
            .await
            .unwrap_err();
        assert!(e.contains("jwks_uri"), "{e}");

        fetch.serve(well_known, "<html>".into());
        assert!(cache.keys("m/", &remote, 0, Refresh::Always).await.is_err());
    }

    #[tokio::test]
    async fn bad_documents_and_failures_are_errors_naming_the_url() {
        let (fetch, cache, remote) = setup();
        fetch.serve("https://issuer.example/jwks", "{\"keys\": []}".into());
        let e = cache
            .keys("m/", &remote, 0, Refresh::IfStale)
            .await
            .unwrap_err();
        assert!(
            e.starts_with("fetching keys from https://issuer.example/jwks"),
            "{e}"
        );
        let missing = Remote::Jwks {
            url: KeyUrl::parse("https://issuer.example/none").unwrap(),
            ca_pem: None,
        };
        let e = cache
            .keys("m/", &missing, 0, Refresh::IfStale)
            .await
            .unwrap_err();
        assert!(e.contains("HTTP 404"), "{e}");
    }
}
