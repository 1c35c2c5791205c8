//! The HTTP client: Vault's KV version 2 API, as hvac or vaultrs call it.

use std::sync::Arc;

use bytes::Bytes;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderValue};

use super::client::{ClientSpec, OP_TIMEOUT, OpError, describe};

/// Longest excerpt of an error response body kept in an [`OpError`].
const ERROR_BODY_EXCERPT: usize = 300;

/// KV v2 over the Vault-compatible HTTP API, with its own connection pool.
#[derive(Debug, Clone)]
pub struct HttpKv {
    client: reqwest::Client,
    /// `{addr}/v1/{mount}/data/{key}` for every key, parsed once.
    urls: Arc<[Url]>,
    token: HeaderValue,
    /// `{"data": {"value": "<value>"}}`, serialized once.
    write_body: Bytes,
}

impl HttpKv {
    /// A client of the API at `base`; connections open on first use.
    pub fn new(base: &Url, spec: &ClientSpec) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .tcp_nodelay(true)
            .timeout(OP_TIMEOUT);
        if let Some(pem) = &spec.ca_cert {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("--ca-cert: {}", describe(&e)))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| describe(&e))?;
        let base = base.as_str().trim_end_matches('/');
        let urls = spec
            .keys
            .paths()
            .iter()
            .map(|path| {
                let url = format!("{base}/v1/{}/data/{path}", spec.mount);
                Url::parse(&url).map_err(|e| format!("bad URL {url}: {e}"))
            })
            .collect::<Result<Arc<[Url]>, String>>()?;
        let mut token = HeaderValue::from_str(spec.token.expose())
            .map_err(|_| "the token is not a valid HTTP header value".to_owned())?;
        token.set_sensitive(true);
        let write_body = serde_json::to_vec(&serde_json::json!({
            "data": { "value": spec.value }
        }))
        .map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            urls,
            token,
            write_body: Bytes::from(write_body),
        })
    }

    /// `GET /v1/{mount}/data/{key}`.
    pub async fn read(&self, key: usize) -> Result<(), OpError> {
        let request = self
            .client
            .get(self.urls[key].clone())
            .header("X-Vault-Token", self.token.clone());
        finish(request).await
    }

    /// `POST /v1/{mount}/data/{key}` with the run's value.
    pub async fn write(&self, key: usize) -> Result<(), OpError> {
        let request = self
            .client
            .post(self.urls[key].clone())
            .header("X-Vault-Token", self.token.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(self.write_body.clone());
        finish(request).await
    }
}

/// Sends the request and reads the whole response body, as a real client
/// would before using it; any status outside 2xx is an error.
async fn finish(request: reqwest::RequestBuilder) -> Result<(), OpError> {
    let response = request.send().await.map_err(|e| OpError(describe(&e)))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| OpError(describe(&e)))?;
    if status.is_success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&body);
        let excerpt: String = text.trim().chars().take(ERROR_BODY_EXCERPT).collect();
        Err(OpError(format!("HTTP {status}: {excerpt}")))
    }
}
