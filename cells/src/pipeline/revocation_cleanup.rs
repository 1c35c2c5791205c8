//! Cleanup of a revocation in this cell's storage: the tokens a record
//! matches (and their leases, so database users are dropped) and the
//! leases it names are revoked for good, so nothing it killed comes back
//! when the record expires. Run by each cell's leader for every record it
//! has not cleaned up yet; what it did is kept under
//! `sys/revocation-cleanup/<id>` and shown by `sys/revocations/:id`.
//!
//! Only what was issued at or before the record dies. Tokens are found by
//! accessor, through the identity index (identity patterns), or, for a
//! role, by a scan of every token (a one-off background job per record).

use serde::{Deserialize, Serialize};
use sigil_control_plane::model::{RevocationRecord, RevocationTarget};
use sigil_gossip::{Credential, Filter};

use super::Pipeline;
use crate::api_error::ApiError;
use crate::revocations::{to_filter_record, token_issued_ms, token_role};
use crate::token::TokenEntry;

const PREFIX: &str = "sys/revocation-cleanup/";

/// What one cell did for one record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    pub tokens_revoked: u64,
    pub leases_queued: u64,
    pub at_ms: u64,
}

pub(super) fn report(p: &Pipeline, id: &str) -> Result<Option<CleanupReport>, ApiError> {
    match p.barrier.get(&format!("{PREFIX}{id}"))? {
        None => Ok(None),
        Some(raw) => Ok(serde_json::from_slice(&raw).ok()),
    }
}

/// Cleans up every record not cleaned up here yet, and forgets the reports
/// of records that are gone.
pub(crate) async fn run(p: &Pipeline) -> Result<usize, ApiError> {
    let records = super::revocations_api::all_records(p).await?;
    let mut done = 0;
    for (id, rec) in &records {
        if report(p, id)?.is_some() {
            continue;
        }
        let r = clean(p, id, rec).await?;
        p.metrics
            .revocation_cleaned(r.tokens_revoked, r.leases_queued);
        tracing::warn!(revocation = %id, tokens = r.tokens_revoked, leases = r.leases_queued, "revocation cleaned up in this cell");
        p.barrier
            .put(
                &format!("{PREFIX}{id}"),
                &serde_json::to_vec(&r).map_err(|e| ApiError::Internal(e.to_string()))?,
            )
            .await?;
        done += 1;
    }
    let live: std::collections::BTreeSet<&str> =
        records.iter().map(|(id, _)| id.as_str()).collect();
    for old in p.barrier.list(PREFIX)? {
        if !old.ends_with('/') && !live.contains(old.as_str()) {
            p.barrier.delete(&format!("{PREFIX}{old}")).await?;
        }
    }
    Ok(done)
}

async fn clean(p: &Pipeline, id: &str, rec: &RevocationRecord) -> Result<CleanupReport, ApiError> {
    let mut filter = Filter::new();
    filter.insert(to_filter_record(id, rec));
    let kills = |e: &TokenEntry| {
        let c = Credential {
            accessor: Some(e.accessor.as_str()),
            identity: e.identity.as_deref(),
            role: token_role(e),
            issued_at_ms: token_issued_ms(e),
            ..Credential::default()
        };
        filter.revoked(&c).is_some()
    };
    let mut tokens: Vec<TokenEntry> = Vec::new();
    let mut leases = 0u64;
    match &rec.target {
        RevocationTarget::Accessor(a) => tokens.extend(p.tokens.by_accessor(a)?),
        RevocationTarget::Identity(_) => {
            for identity in p.tokens.identities()? {
                let probe = Credential {
                    identity: Some(identity.as_str()),
                    ..Credential::default()
                };
                if filter.revoked(&probe).is_none() {
                    continue;
                }
                for hash in p.tokens.by_identity(&identity)? {
                    tokens.extend(p.tokens.by_hash(&hash)?);
                }
            }
        }
        RevocationTarget::Role { .. } => {
            for accessor in p.tokens.accessors()? {
                tokens.extend(p.tokens.by_accessor(&accessor)?);
            }
        }
        RevocationTarget::LeasePrefix(prefix) => {
            let prefix = format!("{}/", prefix.trim_end_matches('/'));
            leases += p.expire_bulk(&prefix).await? as u64;
        }
        RevocationTarget::LeaseId(lease) => {
            if p.leases.get(lease)?.is_some() {
                leases += p.expire_bulk(lease).await? as u64;
            }
        }
        RevocationTarget::CertSerial(_) => {}
    }
    let mut revoked = 0u64;
    for e in tokens.iter().filter(|e| kills(e)) {
        let gone = p.tokens.revoke_tree(&e.hash).await?;
        revoked += gone.len() as u64;
        p.cleanup_revoked(&gone).await;
    }
    Ok(CleanupReport {
        tokens_revoked: revoked,
        leases_queued: leases,
        at_ms: sigil_control_plane::sync::now_ms(),
    })
}
