//! Domain types → generated `sigil.v1` messages. The only place generated
//! structs are built.

use base64::Engine as _;
use sigil_proto::v1 as pb;

use crate::node::Health;
use crate::seal::{GenerateRootStatus, InitOutput, RekeyStatus, SealStatus};
use crate::shamir::Share;

fn hex_all(shares: &[Share]) -> Vec<String> {
    shares.iter().map(|s| hex::encode(s.expose())).collect()
}

fn b64_all(shares: &[Share]) -> Vec<String> {
    shares
        .iter()
        .map(|s| base64::engine::general_purpose::STANDARD.encode(s.expose()))
        .collect()
}

pub(super) fn init_response(o: &InitOutput) -> pb::InitResponse {
    pb::InitResponse {
        keys: hex_all(&o.keys),
        keys_base64: b64_all(&o.keys),
        recovery_keys: hex_all(&o.recovery_keys),
        recovery_keys_base64: b64_all(&o.recovery_keys),
        root_token: o.root_token.expose().to_owned(),
    }
}

pub(super) fn seal_status(s: &SealStatus) -> pb::SealStatusResponse {
    let (cluster_name, cluster_id) = s
        .cluster
        .as_ref()
        .map(|c| (c.cluster_name.clone(), c.cluster_id.clone()))
        .unwrap_or_default();
    pb::SealStatusResponse {
        r#type: s.seal_type.as_str().to_owned(),
        initialized: s.initialized,
        sealed: s.sealed,
        t: s.threshold.into(),
        n: s.shares.into(),
        progress: s.progress.into(),
        nonce: s.nonce.clone(),
        version: crate::node::VERSION.to_owned(),
        cluster_name,
        cluster_id,
        recovery_seal: s.recovery_seal,
        storage_type: "rocksdb".to_owned(),
    }
}

pub(super) fn health(h: &Health) -> pb::HealthResponse {
    let (cluster_name, cluster_id) = h
        .cluster
        .as_ref()
        .map(|c| (c.cluster_name.clone(), c.cluster_id.clone()))
        .unwrap_or_default();
    pb::HealthResponse {
        initialized: h.initialized,
        sealed: h.sealed,
        standby: h.standby,
        performance_standby: h.performance_standby,
        server_time_utc: h.server_time_utc,
        version: h.version.clone(),
        cluster_name,
        cluster_id,
    }
}

pub(super) fn rekey_status(s: &RekeyStatus) -> pb::RekeyStatusResponse {
    pb::RekeyStatusResponse {
        started: s.started,
        nonce: s.nonce.clone(),
        t: s.threshold_out.into(),
        n: s.shares_out.into(),
        progress: s.progress.into(),
        required: s.required.into(),
    }
}

pub(super) fn rekey_update(s: &RekeyStatus) -> pb::RekeyUpdateResponse {
    pb::RekeyUpdateResponse {
        complete: s.complete,
        nonce: s.nonce.clone(),
        progress: s.progress.into(),
        required: s.required.into(),
        keys: hex_all(&s.keys),
        keys_base64: b64_all(&s.keys),
    }
}

pub(super) fn generate_root(s: &GenerateRootStatus) -> pb::GenerateRootStatusResponse {
    pb::GenerateRootStatusResponse {
        started: s.started,
        nonce: s.nonce.clone(),
        progress: s.progress.into(),
        required: s.required.into(),
        complete: s.complete,
        encoded_token: s.encoded_token.clone(),
        otp: s
            .otp
            .as_ref()
            .map(|o| o.expose().to_owned())
            .unwrap_or_default(),
        otp_length: s.otp_length as u32,
    }
}
