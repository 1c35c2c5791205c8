//! The per-device hash chain (docs/audit.md, "The hash chain").
//!
//! Every line a device writes carries `seq` (1, 2, 3, ... from the moment the
//! device is enabled) and `prev_hash`, `sha256:<hex>` of the exact bytes of
//! the previous line the device wrote, newline excluded, prefix included.
//! The first line's `prev_hash` is [`genesis_hash`] of the device path.
//! Records the device could not write still use up their `seq`; the next
//! line it writes says how many with `missed`, so the gap is explained.
//!
//! [`Chain`] does no I/O: the writer task asks it to [`Chain::seal`] an
//! entry, writes the bytes, then tells it the outcome.

use aws_lc_rs::digest;
use serde::Serialize;

/// Fixed string the genesis hash is computed from, followed by the device
/// path (`file/`, `audit-socket/`, ...).
pub const GENESIS: &str = "sigil-audit-genesis-v1:";

/// `sha256:<hex>` of `bytes`.
pub fn line_hash(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
    )
}

/// `prev_hash` of the first record a device writes after it is enabled:
/// `sha256:` and the hex SHA-256 of `GENESIS` followed by the device path.
pub fn genesis_hash(device_path: &str) -> String {
    line_hash(format!("{GENESIS}{device_path}").as_bytes())
}

/// A line ready to be written: prefix, JSON and the newline, so a device
/// can write it with one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedLine {
    pub seq: u64,
    pub bytes: Vec<u8>,
}

impl SealedLine {
    /// The bytes the next line's `prev_hash` covers: all but the newline.
    pub fn hashed_bytes(&self) -> &[u8] {
        self.bytes.strip_suffix(b"\n").unwrap_or(&self.bytes)
    }
}

/// The chain state of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    next_seq: u64,
    prev_hash: String,
    missed: u64,
}

#[derive(Serialize)]
struct Chained<'a, T: Serialize> {
    #[serde(flatten)]
    entry: &'a T,
    seq: u64,
    prev_hash: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    missed: Option<u64>,
}

impl Chain {
    /// A new chain for the device at `device_path`.
    pub fn new(device_path: &str) -> Self {
        Self {
            next_seq: 1,
            prev_hash: genesis_hash(device_path),
            missed: 0,
        }
    }

    /// `seq` the next line will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records dropped before they reached the writer (the device's queue
    /// was full): they use up `seq` numbers.
    pub fn skip(&mut self, count: u64) {
        self.next_seq = self.next_seq.saturating_add(count);
        self.missed = self.missed.saturating_add(count);
    }

    /// The bytes of the next line: `prefix`, then `entry` as JSON with `seq`,
    /// `prev_hash` and (after a gap) `missed` added. Nothing changes until
    /// [`Chain::written`] or [`Chain::failed`].
    pub fn seal<T: Serialize>(
        &self,
        prefix: &str,
        entry: &T,
    ) -> Result<SealedLine, serde_json::Error> {
        let chained = Chained {
            entry,
            seq: self.next_seq,
            prev_hash: &self.prev_hash,
            missed: (self.missed > 0).then_some(self.missed),
        };
        let mut bytes = prefix.as_bytes().to_vec();
        serde_json::to_writer(&mut bytes, &chained)?;
        bytes.push(b'\n');
        Ok(SealedLine {
            seq: self.next_seq,
            bytes,
        })
    }

    /// `line` reached the device: the next line links to it.
    pub fn written(&mut self, line: &SealedLine) {
        self.prev_hash = line_hash(line.hashed_bytes());
        self.next_seq = line.seq.saturating_add(1);
        self.missed = 0;
    }

    /// `line` did not reach the device: its `seq` is used up and counted as
    /// missed; the next line still links to the last line written.
    pub fn failed(&mut self, line: &SealedLine) {
        self.next_seq = line.seq.saturating_add(1);
        self.missed = self.missed.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parse(line: &SealedLine, prefix: &str) -> Value {
        let text = std::str::from_utf8(line.hashed_bytes()).expect("utf8");
        serde_json::from_str(text.strip_prefix(prefix).expect("prefix")).expect("json")
    }

    #[test]
    fn lines_link_to_the_previous_line_bytes() {
        let mut c = Chain::new("file/");
        let a = c.seal("", &json!({"type": "request"})).expect("seal");
        let va = parse(&a, "");
        assert_eq!(va["seq"], 1);
        assert_eq!(va["prev_hash"], genesis_hash("file/"));
        assert!(va.get("missed").is_none());
        assert_eq!(va["type"], "request");
        c.written(&a);
        let b = c.seal("", &json!({"type": "response"})).expect("seal");
        let vb = parse(&b, "");
        assert_eq!(vb["seq"], 2);
        assert_eq!(vb["prev_hash"], line_hash(a.hashed_bytes()));
    }

    #[test]
    fn failures_and_drops_use_up_seq_and_are_reported_once() {
        let mut c = Chain::new("file/");
        let a = c.seal("p: ", &json!({})).expect("seal");
        c.written(&a);
        let b = c.seal("p: ", &json!({})).expect("seal");
        c.failed(&b);
        c.skip(2);
        let d = c.seal("p: ", &json!({})).expect("seal");
        let vd = parse(&d, "p: ");
        assert_eq!(vd["seq"], 5);
        assert_eq!(vd["missed"], 3);
        assert_eq!(vd["prev_hash"], line_hash(a.hashed_bytes()));
        c.written(&d);
        let e = c.seal("p: ", &json!({})).expect("seal");
        let ve = parse(&e, "p: ");
        assert_eq!(ve["seq"], 6);
        assert!(ve.get("missed").is_none());
    }

    #[test]
    fn a_line_is_one_line() {
        let c = Chain::new("file/");
        let a = c.seal("", &json!({"s": "a\nb"})).expect("seal");
        assert_eq!(a.bytes.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(a.bytes.ends_with(b"\n"));
    }

    #[test]
    fn genesis_depends_on_the_device_path() {
        assert_ne!(genesis_hash("file/"), genesis_hash("other/"));
        assert_eq!(
            genesis_hash("file/"),
            line_hash(b"sigil-audit-genesis-v1:file/")
        );
    }
}
