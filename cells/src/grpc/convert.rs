//! Domain types → generated `sigil.v1` messages. The only place generated
//! structs are built.

use base64::Engine as _;
use prost_types::value::Kind;
use serde_json::{Map, Number, Value};
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

/// A JSON object as a `google.protobuf.Struct`.
pub(super) fn json_to_struct(m: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A `google.protobuf.Struct` as a JSON object. Whole numbers become JSON
/// integers, so `{"cas": 1}` stays an integer for the engines.
pub(super) fn struct_to_json(s: &prost_types::Struct) -> Map<String, Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

fn value_to_json(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                // Exact: |n| < 2^53.
                Value::Number(Number::from(*n as i64))
            } else {
                Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_struct() {
        let v = serde_json::json!({
            "s": "x", "n": 3, "f": 1.5, "b": true, "z": null,
            "l": [1, "a", {"k": []}], "o": {"deep": {"er": -2}},
        });
        let m = v.as_object().cloned().unwrap_or_default();
        assert_eq!(Value::Object(struct_to_json(&json_to_struct(&m))), v);
    }
}
