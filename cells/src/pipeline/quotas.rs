//! Quotas (docs/architecture.md, "Quotas"): rate limits per client address
//! or per path, and caps on the number of leases under a path, so one
//! misbehaving client (one that logs in or asks for credentials on every
//! call) cannot flood a cell or its databases. Vault offers lease-count
//! quotas only in its Enterprise edition.
//!
//! Both kinds live in the barrier under `core/quotas/<kind>/<name>`, so a
//! change on the leader reaches every node's pipeline through the same
//! reload as mounts and policies. Rate-limit buckets are per node, as in
//! Vault: a client spreading its requests over the nodes of a cell gets the
//! rate on each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Pipeline, data};
use crate::api_error::ApiError;
use crate::logical::{Operation, Request, Response};
use crate::params;

const PREFIX: &str = "core/quotas/";
/// Buckets kept before idle ones are dropped.
const MAX_BUCKETS: usize = 100_000;

/// A quota as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    pub name: String,
    /// `rate-limit` or `lease-count`.
    pub kind: String,
    /// A path prefix, segment-aligned (`database/`, `database/creds/app`);
    /// empty for every path.
    pub path: String,
    /// Rate limit: requests per `interval`.
    #[serde(default)]
    pub rate: f64,
    /// Rate limit: the bucket's size (bursts); defaults to `rate`.
    #[serde(default)]
    pub burst: f64,
    /// Rate limit: seconds.
    #[serde(default)]
    pub interval: u64,
    /// Rate limit: `client_address` (a bucket per client, as Vault) or
    /// `path` (one bucket shared by everyone).
    #[serde(default)]
    pub scope: String,
    /// Lease count: the most leases under `path`.
    #[serde(default)]
    pub max_leases: u64,
}

impl Quota {
    fn matches(&self, path: &str) -> bool {
        let p = self.path.trim_end_matches('/');
        p.is_empty()
            || path == p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    fn to_json(&self) -> Value {
        let mut v = json!({ "name": self.name, "type": self.kind, "path": self.path });
        if let Some(m) = v.as_object_mut() {
            if self.kind == "rate-limit" {
                m.insert("rate".into(), json!(self.rate));
                m.insert("burst".into(), json!(self.burst));
                m.insert("interval".into(), json!(self.interval));
                m.insert("scope".into(), json!(self.scope));
            } else {
                m.insert("max_leases".into(), json!(self.max_leases));
            }
        }
        v
    }
}

/// The quotas in force on this node and the rate limiters' buckets.
#[derive(Debug, Default)]
pub struct Quotas {
    rules: std::sync::RwLock<Vec<Quota>>,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Quotas {
    /// The most specific quota of `kind` covering `path` (Vault applies the
    /// most specific one).
    fn covering(&self, kind: &str, path: &str) -> Option<Quota> {
        self.rules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|q| q.kind == kind && q.matches(path))
            .max_by_key(|q| q.path.trim_end_matches('/').len())
            .cloned()
    }

    fn set(&self, rules: Vec<Quota>) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules;
        // Limits may have changed: start every bucket afresh.
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Takes one request from the bucket of `quota` for `client`; false
    /// when the bucket is empty.
    fn take(&self, quota: &Quota, client: Option<IpAddr>, now: Instant) -> bool {
        let who = match (quota.scope.as_str(), client) {
            ("path", _) | (_, None) => String::new(),
            (_, Some(ip)) => ip.to_string(),
        };
        let per_sec = quota.rate / quota.interval.max(1) as f64;
        let burst = if quota.burst > 0.0 {
            quota.burst
        } else {
            quota.rate
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            // Drop buckets that have refilled: forgetting them changes
            // nothing for their clients.
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let b = buckets.entry((quota.name.clone(), who)).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * per_sec;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Pipeline {
    /// Reads the stored quotas into force (at build, and when another node
    /// changed them).
    pub(super) fn load_quotas(&self) -> Result<(), ApiError> {
        let mut rules = Vec::new();
        for kind in ["rate-limit", "lease-count"] {
            for name in self.barrier.list(&format!("{PREFIX}{kind}/"))? {
                if let Some(raw) = self.barrier.get(&format!("{PREFIX}{kind}/{name}"))? {
                    let q: Quota = serde_json::from_slice(&raw).map_err(|e| {
                        ApiError::Internal(format!("quota {name:?} is corrupt: {e}"))
                    })?;
                    rules.push(q);
                }
            }
        }
        self.quotas.set(rules);
        Ok(())
    }

    /// The rate limit, before anything else is done for the request.
    /// `sys/quotas/*` is exempt, so an operator can always lift a quota.
    pub(super) fn check_rate_limit(&self, req: &Request) -> Result<(), ApiError> {
        if req.path.starts_with("sys/quotas/") {
            return Ok(());
        }
        let Some(q) = self.quotas.covering("rate-limit", &req.path) else {
            return Ok(());
        };
        if self
            .quotas
            .take(&q, req.client_addr.map(|a| a.ip()), Instant::now())
        {
            Ok(())
        } else {
            Err(ApiError::TooManyRequests(format!(
                "request path {:?}: rate limit quota {:?} exceeded ({} requests per {}s); retry later",
                req.path,
                q.name,
                q.rate,
                q.interval.max(1)
            )))
        }
    }

    /// The lease-count quota, before an engine hands out a leased secret:
    /// refused with 429 when the path already holds its maximum, so no
    /// database user is created that no lease could hold.
    pub(super) fn check_lease_count(&self, req: &Request) -> Result<(), ApiError> {
        let Some(q) = self.quotas.covering("lease-count", &req.path) else {
            return Ok(());
        };
        let prefix = q.path.trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        // Counting stops at the maximum, so a check costs at most that.
        let limit = usize::try_from(q.max_leases).unwrap_or(usize::MAX);
        let mut n = 0usize;
        let mut after: Option<String> = None;
        while n < limit {
            let page =
                self.leases
                    .ids_with_prefix(&prefix, after.as_deref(), (limit - n).min(4096))?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            n += page.len();
            after = Some(last);
        }
        if n >= limit {
            return Err(ApiError::TooManyRequests(format!(
                "lease count quota {:?} exceeded: {} leases under {:?} already; revoke some or raise max_leases",
                q.name, q.max_leases, q.path
            )));
        }
        Ok(())
    }
}

/// `sys/quotas/rate-limit/:name`, `sys/quotas/lease-count/:name`, and
/// listing either kind.
pub(super) async fn handle(p: &Pipeline, req: &Request, rest: &str) -> Result<Response, ApiError> {
    let op = req.operation;
    let (kind, name) = rest.split_once('/').unwrap_or((rest, ""));
    if !matches!(kind, "rate-limit" | "lease-count") {
        return Err(ApiError::NotFound(format!(
            "no quota type {kind:?}: want rate-limit or lease-count"
        )));
    }
    let name = name.trim_end_matches('/');
    if name.is_empty() {
        return match op {
            Operation::List | Operation::Read => {
                crate::engines::list_response(p.barrier.list(&format!("{PREFIX}{kind}/"))?)
            }
            _ => Err(ApiError::UnsupportedOperation),
        };
    }
    crate::auth::token_params::check_role_name(name)?;
    let key = format!("{PREFIX}{kind}/{name}");
    match op {
        Operation::Read => {
            let raw = p
                .barrier
                .get(&key)?
                .ok_or_else(|| ApiError::NotFound(String::new()))?;
            let q: Quota = serde_json::from_slice(&raw)
                .map_err(|e| ApiError::Internal(format!("quota is corrupt: {e}")))?;
            Ok(data(q.to_json()))
        }
        Operation::Create | Operation::Update => {
            let old = match p.barrier.get(&key)? {
                Some(raw) => serde_json::from_slice(&raw).ok(),
                None => None,
            };
            let q = quota_from(kind, name, old, &req.data)?;
            let raw = serde_json::to_vec(&q).map_err(|e| ApiError::Internal(e.to_string()))?;
            p.barrier.put(&key, &raw).await?;
            p.load_quotas()?;
            tracing::info!(kind, name, path = %q.path, "quota written");
            Ok(Response::empty())
        }
        Operation::Delete => {
            p.barrier.delete(&key).await?;
            p.load_quotas()?;
            Ok(Response::empty())
        }
        _ => Err(ApiError::UnsupportedOperation),
    }
}

fn quota_from(
    kind: &str,
    name: &str,
    old: Option<Quota>,
    d: &crate::logical::Data,
) -> Result<Quota, ApiError> {
    let known: &[&str] = if kind == "rate-limit" {
        &[
            "name",
            "path",
            "rate",
            "burst",
            "interval",
            "scope",
            "block_interval",
            "role",
        ]
    } else {
        &["name", "path", "max_leases", "role"]
    };
    params::deny_unknown(d, known)?;
    if params::string(d, "role")?.is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::InvalidRequest(
            "quotas on login roles are not supported; set path instead".into(),
        ));
    }
    let mut q = old.unwrap_or(Quota {
        name: name.to_owned(),
        kind: kind.to_owned(),
        path: String::new(),
        rate: 0.0,
        burst: 0.0,
        interval: 1,
        scope: "client_address".into(),
        max_leases: 0,
    });
    if let Some(path) = params::string(d, "path")? {
        let trimmed = path.trim_start_matches('/').to_owned();
        if !trimmed.is_empty() {
            crate::logical::check_path(&trimmed)?;
        }
        q.path = trimmed;
    }
    let number = |field: &str| -> Result<Option<f64>, ApiError> {
        match d.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| {
                ApiError::InvalidRequest(format!("invalid value for {field:?}: want a number"))
            }),
            Some(_) => Err(ApiError::InvalidRequest(format!(
                "invalid value for {field:?}: want a number"
            ))),
        }
    };
    if kind == "rate-limit" {
        if let Some(r) = number("rate")? {
            q.rate = r;
        }
        if let Some(b) = number("burst")? {
            q.burst = b;
        }
        if let Some(i) = params::seconds(d, "interval")? {
            q.interval = i;
        }
        if let Some(s) = params::string(d, "scope")? {
            if !matches!(s.as_str(), "client_address" | "path") {
                return Err(ApiError::InvalidRequest(
                    "scope must be \"client_address\" or \"path\"".into(),
                ));
            }
            q.scope = s;
        }
        if !(q.rate.is_finite() && q.rate > 0.0) {
            return Err(ApiError::InvalidRequest(
                "rate must be greater than 0".into(),
            ));
        }
        if !(q.burst.is_finite() && q.burst >= 0.0) || (q.burst > 0.0 && q.burst < 1.0) {
            return Err(ApiError::InvalidRequest(
                "burst must be at least 1 (or 0 for the rate)".into(),
            ));
        }
        if q.interval == 0 {
            return Err(ApiError::InvalidRequest(
                "interval must be at least 1s".into(),
            ));
        }
    } else {
        if let Some(m) = params::uint(d, "max_leases")? {
            q.max_leases = m;
        }
        if q.max_leases == 0 {
            return Err(ApiError::InvalidRequest(
                "max_leases must be greater than 0".into(),
            ));
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(path: &str, rate: f64, burst: f64, scope: &str) -> Quota {
        Quota {
            name: format!("q-{path}"),
            kind: "rate-limit".into(),
            path: path.into(),
            rate,
            burst,
            interval: 1,
            scope: scope.into(),
            max_leases: 0,
        }
    }

    #[test]
    fn buckets_refill_at_the_rate_and_hold_a_burst() {
        let quotas = Quotas::default();
        let q = rate("", 2.0, 3.0, "client_address");
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(quotas.take(&q, Some(a), t0));
        }
        assert!(!quotas.take(&q, Some(a), t0), "burst spent");
        assert!(
            quotas.take(&q, Some(b), t0),
            "another client has its own bucket"
        );
        assert!(!quotas.take(&q, Some(a), t0 + Duration::from_millis(400)));
        assert!(
            quotas.take(&q, Some(a), t0 + Duration::from_millis(500)),
            "refilled one"
        );
        // One bucket for everyone with scope=path.
        let shared = rate("kv", 1.0, 1.0, "path");
        assert!(quotas.take(&shared, Some(a), t0));
        assert!(!quotas.take(&shared, Some(b), t0));
    }

    #[test]
    fn the_most_specific_quota_applies_on_segment_boundaries() {
        let quotas = Quotas::default();
        quotas.set(vec![
            rate("", 100.0, 0.0, "path"),
            rate("database/", 10.0, 0.0, "path"),
            rate("database/creds/app", 1.0, 0.0, "path"),
        ]);
        let pick = |p: &str| quotas.covering("rate-limit", p).map(|q| q.path);
        assert_eq!(
            pick("database/creds/app").as_deref(),
            Some("database/creds/app")
        );
        assert_eq!(pick("database/creds/apple").as_deref(), Some("database/"));
        assert_eq!(pick("database").as_deref(), Some("database/"));
        assert_eq!(pick("secret/data/x").as_deref(), Some(""));
        assert!(
            quotas
                .covering("lease-count", "database/creds/app")
                .is_none()
        );
    }
}
