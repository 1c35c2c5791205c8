//! What KV version 2 stores about a key and about the mount, and the rules
//! that move it: adding a version, the `max_versions` window, deletion
//! times. Pure data and logic; `v2.rs` reads and writes it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::duration::format_go_duration;

/// Versions kept per key when neither the key nor the mount says.
pub const DEFAULT_MAX_VERSIONS: u32 = 10;

/// Nanoseconds since the Unix epoch; an `i64` holds dates until 2262.
pub type UnixNanos = i64;

pub fn unix_nanos(t: OffsetDateTime) -> UnixNanos {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// RFC 3339 in UTC with as many fractional digits as needed, as Go's
/// `time.RFC3339Nano` prints them (`2018-03-22T02:24:06.945319214Z`).
pub fn format_time(nanos: UnixNanos) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The mount's settings (`config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KvConfig {
    /// 0: [`DEFAULT_MAX_VERSIONS`].
    pub max_versions: u32,
    pub cas_required: bool,
    /// Nanoseconds; 0 unset, negative disables `delete_version_after` for
    /// every key (Vault stores -1s for "disabled").
    pub delete_version_after: i64,
}

impl KvConfig {
    pub fn to_data(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("max_versions".into(), self.max_versions.into());
        m.insert("cas_required".into(), self.cas_required.into());
        m.insert(
            "delete_version_after".into(),
            format_signed(self.delete_version_after).into(),
        );
        m
    }
}

fn format_signed(nanos: i64) -> String {
    let d = format_go_duration(Duration::from_nanos(nanos.unsigned_abs()));
    if nanos < 0 { format!("-{d}") } else { d }
}

/// One version of one key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VersionMeta {
    pub created_time: UnixNanos,
    /// Set by a soft delete, or in the future by `delete_version_after`.
    pub deletion_time: Option<UnixNanos>,
    pub destroyed: bool,
}

impl VersionMeta {
    /// Deleted once its deletion time has passed (a `delete_version_after`
    /// deadline still ahead leaves it readable).
    pub fn is_deleted(&self, now: UnixNanos) -> bool {
        self.deletion_time.is_some_and(|t| t <= now)
    }

    /// Neither deleted nor destroyed.
    pub fn is_live(&self, now: UnixNanos) -> bool {
        !self.destroyed && !self.is_deleted(now)
    }
}

/// Everything about one key except its data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyMetadata {
    pub current_version: u64,
    /// 0 until the `max_versions` window first moves, as in Vault.
    pub oldest_version: u64,
    pub created_time: UnixNanos,
    pub updated_time: UnixNanos,
    /// 0: the mount's setting.
    pub max_versions: u32,
    pub cas_required: bool,
    /// Nanoseconds; 0 unset.
    pub delete_version_after: u64,
    /// `None` prints as `null`, as Vault does for a key that never had any.
    pub custom_metadata: Option<BTreeMap<String, String>>,
    pub versions: BTreeMap<u64, VersionMeta>,
}

impl KeyMetadata {
    pub fn new(now: UnixNanos) -> Self {
        Self {
            created_time: now,
            updated_time: now,
            ..Self::default()
        }
    }

    /// Adds version `current_version + 1` created at `now`, and slides the
    /// window of kept versions. Returns the new version's number and the
    /// versions that fell out of the window, whose data must be deleted.
    ///
    /// The window is the larger of the key's and the mount's `max_versions`
    /// (0 meaning unset; both unset is 10), as current Vault does.
    pub fn add_version(&mut self, now: UnixNanos, config: &KvConfig) -> (u64, Vec<u64>) {
        let deletion_time = self.deletion_time(now, config);
        self.current_version += 1;
        let n = self.current_version;
        self.versions.insert(
            n,
            VersionMeta {
                created_time: now,
                deletion_time,
                destroyed: false,
            },
        );
        self.updated_time = now;
        if self.created_time == 0 {
            self.created_time = now;
        }
        let max = match self.max_versions.max(config.max_versions) {
            0 => DEFAULT_MAX_VERSIONS,
            m => m,
        };
        let mut pruned = Vec::new();
        if self.current_version - self.oldest_version >= u64::from(max) {
            let last_dropped = self.current_version - u64::from(max);
            let dropped: Vec<u64> = self
                .versions
                .range(..=last_dropped)
                .map(|(v, _)| *v)
                .collect();
            for v in dropped {
                self.versions.remove(&v);
                pruned.push(v);
            }
            self.oldest_version = last_dropped + 1;
        }
        (n, pruned)
    }

    /// When a version written at `now` expires: `now` plus the smaller of
    /// the key's and the mount's non-zero `delete_version_after`, unless
    /// the mount disabled it.
    fn deletion_time(&self, now: UnixNanos, config: &KvConfig) -> Option<UnixNanos> {
        if config.delete_version_after < 0 {
            return None;
        }
        let mount = config.delete_version_after.unsigned_abs();
        let after = match (self.delete_version_after, mount) {
            (0, 0) => return None,
            (0, m) => m,
            (k, 0) => k,
            (k, m) => k.min(m),
        };
        Some(now.saturating_add(i64::try_from(after).unwrap_or(i64::MAX)))
    }

    /// The `metadata` block of a data or subkeys read, and the body of a
    /// write.
    pub fn version_data(&self, n: u64, v: &VersionMeta) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("version".into(), n.into());
        m.insert("created_time".into(), format_time(v.created_time).into());
        m.insert(
            "deletion_time".into(),
            v.deletion_time.map(format_time).unwrap_or_default().into(),
        );
        m.insert("destroyed".into(), v.destroyed.into());
        m.insert("custom_metadata".into(), self.custom_metadata_value());
        m
    }

    fn custom_metadata_value(&self) -> Value {
        match &self.custom_metadata {
            None => Value::Null,
            Some(c) => Value::Object(
                c.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
        }
    }

    /// The body of `metadata/:path` GET.
    pub fn to_data(&self) -> Map<String, Value> {
        let versions: Map<String, Value> = self
            .versions
            .iter()
            .map(|(n, v)| {
                let mut m = Map::new();
                m.insert("created_time".into(), format_time(v.created_time).into());
                m.insert(
                    "deletion_time".into(),
                    v.deletion_time.map(format_time).unwrap_or_default().into(),
                );
                m.insert("destroyed".into(), v.destroyed.into());
                (n.to_string(), Value::Object(m))
            })
            .collect();
        let mut m = Map::new();
        m.insert("cas_required".into(), self.cas_required.into());
        m.insert("created_time".into(), format_time(self.created_time).into());
        m.insert("current_version".into(), self.current_version.into());
        m.insert("custom_metadata".into(), self.custom_metadata_value());
        m.insert(
            "delete_version_after".into(),
            format_go_duration(Duration::from_nanos(self.delete_version_after)).into(),
        );
        m.insert("max_versions".into(), self.max_versions.into());
        m.insert("oldest_version".into(), self.oldest_version.into());
        m.insert("updated_time".into(), format_time(self.updated_time).into());
        m.insert("versions".into(), Value::Object(versions));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_like_go_rfc3339_nano() {
        assert_eq!(
            format_time(1_521_685_446_945_319_214),
            "2018-03-22T02:24:06.945319214Z"
        );
        assert_eq!(
            format_time(1_521_685_446_000_000_000),
            "2018-03-22T02:24:06Z"
        );
        assert_eq!(
            format_time(1_521_685_446_500_000_000),
            "2018-03-22T02:24:06.5Z"
        );
    }

    #[test]
    fn the_window_keeps_the_larger_max_versions() {
        let mut m = KeyMetadata::new(1);
        let cfg = KvConfig {
            max_versions: 2,
            ..KvConfig::default()
        };
        assert_eq!(m.add_version(1, &cfg), (1, vec![]));
        assert_eq!(m.add_version(2, &cfg), (2, vec![]));
        assert_eq!(m.add_version(3, &cfg), (3, vec![1]));
        assert_eq!(m.oldest_version, 2);
        m.max_versions = 3;
        assert_eq!(m.add_version(4, &cfg), (4, vec![]));
        assert_eq!(m.add_version(5, &cfg), (5, vec![2]));
        assert_eq!(m.versions.keys().copied().collect::<Vec<_>>(), [3, 4, 5]);
    }

    #[test]
    fn deletion_time_takes_the_smaller_delay_unless_disabled() {
        let mut m = KeyMetadata::new(0);
        let mut cfg = KvConfig::default();
        assert_eq!(m.deletion_time(10, &cfg), None);
        cfg.delete_version_after = 100;
        assert_eq!(m.deletion_time(10, &cfg), Some(110));
        m.delete_version_after = 50;
        assert_eq!(m.deletion_time(10, &cfg), Some(60));
        m.delete_version_after = 500;
        assert_eq!(m.deletion_time(10, &cfg), Some(110));
        cfg.delete_version_after = -1_000_000_000;
        assert_eq!(m.deletion_time(10, &cfg), None);
    }
}
