//! A small HTTP client for the CLI.

use std::path::PathBuf;

use serde_json::Value;

/// Where and as whom the CLI talks to a node.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    /// Sent as `X-Vault-Wrap-TTL`: the server answers with `wrap_info`.
    wrap_ttl: Option<String>,
    http: reqwest::Client,
}

/// `Content-Type` of a JSON merge patch (RFC 7396), as Vault's `PATCH` expects.
const MERGE_PATCH: &str = "application/merge-patch+json";

/// A non-2xx answer: the status and the server's `errors`.
#[derive(Debug)]
pub struct HttpError {
    pub status: u16,
    pub body: Value,
}

impl HttpError {
    pub fn message(&self) -> String {
        let errors: Vec<String> = self
            .body
            .get("errors")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if errors.is_empty() {
            format!("server answered {}", self.status)
        } else {
            format!("{} (HTTP {})", errors.join("; "), self.status)
        }
    }
}

fn env_first(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

impl Client {
    /// From flags and environment: `SIGIL_ADDR`/`VAULT_ADDR`,
    /// `SIGIL_TOKEN`/`VAULT_TOKEN`, `SIGIL_CACERT`/`VAULT_CACERT`,
    /// `SIGIL_SKIP_VERIFY`/`VAULT_SKIP_VERIFY`.
    pub fn from_env(address: Option<&str>) -> Result<Self, String> {
        let base = address
            .map(str::to_owned)
            .or_else(|| env_first(&["SIGIL_ADDR", "VAULT_ADDR"]))
            .unwrap_or_else(|| "http://127.0.0.1:8200".into());
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "address {base:?} must start with http:// or https://"
            ));
        }
        let token = env_first(&["SIGIL_TOKEN", "VAULT_TOKEN"]);
        let ca = env_first(&["SIGIL_CACERT", "VAULT_CACERT"]).map(PathBuf::from);
        let skip = env_first(&["SIGIL_SKIP_VERIFY", "VAULT_SKIP_VERIFY"])
            .is_some_and(|v| v != "0" && v != "false");
        if skip {
            eprintln!("Warning: TLS certificate verification is disabled");
        }
        let tls = crate::tls::client_config(ca.as_deref(), skip)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            base,
            token,
            wrap_ttl: None,
            http,
        })
    }

    /// The same client, asking for response-wrapped answers with `ttl`
    /// (anything the server accepts: `"300"`, `"5m"`).
    pub fn wrapping(mut self, ttl: Option<String>) -> Self {
        self.wrap_ttl = ttl;
        self
    }

    /// Sends a request; `Ok(None)` for 204. Non-2xx answers whose body is
    /// still meaningful (health) come back as `Err(HttpError)` with the body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, CallError> {
        self.send(method, path, body, "application/json").await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> Result<Option<Value>, CallError> {
        let mut req = self.request(method, path);
        if let Some(ttl) = &self.wrap_ttl {
            req = req.header("X-Vault-Wrap-TTL", ttl);
        }
        if let Some(b) = body {
            let bytes = serde_json::to_vec(b)
                .map_err(|e| CallError::Transport(format!("cannot encode the request: {e}")))?;
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CallError::Transport(format!("cannot reach {}: {e}", self.base)))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| {
            CallError::Transport(format!("reading the answer from {}: {e}", self.base))
        })?;
        let value = if text.trim().is_empty() {
            None
        } else {
            Some(
                serde_json::from_str::<Value>(&text)
                    .map_err(|e| CallError::Transport(format!("invalid JSON from server: {e}")))?,
            )
        };
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(CallError::Http(HttpError {
                status,
                body: value.unwrap_or(Value::Null),
            }))
        }
    }

    pub async fn get(&self, path: &str) -> Result<Option<Value>, CallError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Option<Value>, CallError> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Option<Value>, CallError> {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Vault's `LIST` verb (the same as `GET ?list=true`).
    pub async fn list(&self, path: &str) -> Result<Option<Value>, CallError> {
        let list = reqwest::Method::from_bytes(b"LIST")
            .map_err(|e| CallError::Transport(format!("LIST method: {e}")))?;
        self.call(list, path, None).await
    }

    /// `GET path`, streaming a binary answer into `out` (a snapshot).
    /// Returns the bytes written. Transfers are not cut off by the usual
    /// one-minute limit: a large cell's snapshot takes longer.
    pub async fn download(&self, path: &str, out: &std::path::Path) -> Result<u64, CallError> {
        use crate::file_stream::{CopyError, write_file};
        let resp = self
            .raw_request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| CallError::Transport(format!("cannot reach {}: {e}", self.base)))?;
        let resp = self.check(resp).await?;
        write_file(resp.bytes_stream(), out)
            .await
            .map_err(|e| match e {
                CopyError::Source(e) => CallError::Transport(format!(
                    "the download from {} was cut off: {e}",
                    self.base
                )),
                CopyError::Io(e) => CallError::Transport(format!("{}: {e}", out.display())),
            })
    }

    /// `POST path` with the file at `input` as the raw body (a snapshot).
    pub async fn upload(&self, path: &str, input: &std::path::Path) -> Result<(), CallError> {
        // Opened here first, so a missing file is reported as such.
        tokio::fs::File::open(input)
            .await
            .map_err(|e| CallError::Transport(format!("{}: {e}", input.display())))?;
        let body =
            reqwest::Body::wrap_stream(crate::file_stream::read_file(input.to_path_buf(), ()));
        let resp = self
            .raw_request(reqwest::Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| CallError::Transport(format!("cannot reach {}: {e}", self.base)))?;
        self.check(resp).await.map(|_| ())
    }

    /// A request to `path` under `/v1/`, with the token.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}/v1/{}", self.base, path.trim_start_matches('/'));
        let req = self
            .http
            .request(method, &url)
            .header("X-Vault-Request", "true");
        match &self.token {
            Some(t) => req.header("X-Vault-Token", t),
            None => req,
        }
    }

    /// [`Client::request`] for a file transfer: no one-minute limit.
    fn raw_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request(method, path)
            .timeout(std::time::Duration::from_secs(24 * 3600))
    }

    /// A 2xx answer as is; anything else as [`CallError::Http`].
    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response, CallError> {
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let body = resp
            .text()
            .await
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        Err(CallError::Http(HttpError { status, body }))
    }

    /// `PATCH` with a JSON merge patch (RFC 7396).
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Option<Value>, CallError> {
        self.send(reqwest::Method::PATCH, path, Some(body), MERGE_PATCH)
            .await
    }
}

/// A failed call: the node could not be reached, or it answered non-2xx.
#[derive(Debug)]
pub enum CallError {
    Transport(String),
    Http(HttpError),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transport(m) => f.write_str(m),
            CallError::Http(h) => f.write_str(&h.message()),
        }
    }
}

impl CallError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Transport(_) => None,
            CallError::Http(h) => Some(h.status),
        }
    }
}
