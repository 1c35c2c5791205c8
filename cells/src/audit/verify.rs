//! Checks a written audit log against its hash chain (docs/audit.md,
//! "Verifying a log"): `sigil audit verify`.
//!
//! Reads line by line, keeping one line of lookahead, and stops at the first
//! break. What a chain cannot show: records cut from the end of a file (or
//! the start, after rotation), and an edit to the very last line that leaves
//! its `seq` alone. Ship records to a second device to cover those.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::chain::{genesis_hash, line_hash};

/// What is wrong at a break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// Not a JSON object with `seq` and `prev_hash` (a truncated or
    /// hand-written line).
    Malformed,
    /// The line's bytes are not those the next line's `prev_hash` covers, or
    /// its `seq` was changed.
    Edited,
    /// `seq` jumps with nothing (`missed`) to explain it.
    Deleted,
    /// `seq` goes backwards, or two records are swapped.
    Reordered,
}

/// The first place the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// 1-based line number of the record that is wrong.
    pub line: u64,
    pub kind: BreakKind,
    pub reason: String,
}

/// Records a device said it could not write (`missed`): a warning, not a
/// break.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub line: u64,
    pub missed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records checked (up to, not including, a break).
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The first line is not the start of a chain, so its `prev_hash`
    /// could not be checked (normal after log rotation).
    pub starts_mid_chain: bool,
    /// Things an operator should know that are not breaks.
    pub notes: Vec<String>,
    pub gaps: Vec<Gap>,
    pub first_break: Option<ChainBreak>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }

    /// One line: `ok: N records, seq A..B, chain intact` or
    /// `BROKEN at line N: <reason>`.
    pub fn summary(&self) -> String {
        if let Some(b) = &self.first_break {
            return format!("BROKEN at line {}: {}", b.line, b.reason);
        }
        let mut s = match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => {
                format!("ok: {} records, seq {a}..{b}, chain intact", self.records)
            }
            _ => "ok: 0 records".to_owned(),
        };
        if !self.gaps.is_empty() {
            let missed: u64 = self.gaps.iter().map(|g| g.missed).sum();
            s.push_str(&format!(
                " ({missed} records missed by the device in {} gaps)",
                self.gaps.len()
            ));
        }
        s
    }
}

/// Verifies the log at `path`.
pub fn verify_file(path: &Path) -> io::Result<VerifyReport> {
    verify_file_with(path, None)
}

/// As [`verify_file`]; with the device path (`file/`), chain starts are
/// checked against its genesis hash too.
pub fn verify_file_with(path: &Path, device_path: Option<&str>) -> io::Result<VerifyReport> {
    let file = File::open(path)?;
    verify_reader_with(BufReader::new(file), device_path)
}

/// Verifies a log read from `reader`.
pub fn verify_reader(reader: impl BufRead) -> io::Result<VerifyReport> {
    verify_reader_with(reader, None)
}

struct Parsed {
    seq: u64,
    prev_hash: String,
    missed: u64,
    hash: String,
}

struct Lines<R> {
    reader: R,
    number: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    /// The next line's number and its parse, or `None` at the end.
    fn next(&mut self) -> io::Result<Option<(u64, Result<Parsed, String>)>> {
        self.buf.clear();
        if self.reader.read_until(b'\n', &mut self.buf)? == 0 {
            return Ok(None);
        }
        self.number += 1;
        let complete = self.buf.last() == Some(&b'\n');
        if complete {
            self.buf.pop();
        }
        let parsed = parse(&self.buf).map_err(|e| {
            if complete {
                e
            } else {
                format!("{e} (last line has no newline: truncated?)")
            }
        });
        Ok(Some((self.number, parsed)))
    }
}

fn parse(line: &[u8]) -> Result<Parsed, String> {
    // Anything before the first `{` is the device's prefix.
    let start = line
        .iter()
        .position(|b| *b == b'{')
        .ok_or("malformed line: no JSON object")?;
    let v: Value = serde_json::from_slice(&line[start..])
        .map_err(|e| format!("malformed line: not JSON ({e})"))?;
    let seq = v
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or("malformed line: no seq")?;
    let prev_hash = v
        .get("prev_hash")
        .and_then(Value::as_str)
        .ok_or("malformed line: no prev_hash")?
        .to_owned();
    let missed = match v.get("missed") {
        None => 0,
        Some(m) => m.as_u64().ok_or("malformed line: missed is not a count")?,
    };
    Ok(Parsed {
        seq,
        prev_hash,
        missed,
        hash: line_hash(line),
    })
}

/// As [`verify_reader`], checking chain starts against the genesis hash of
/// `device_path` when it is given.
pub fn verify_reader_with(
    reader: impl BufRead,
    device_path: Option<&str>,
) -> io::Result<VerifyReport> {
    let genesis = device_path.map(genesis_hash);
    let mut report = VerifyReport::default();
    let mut lines = Lines {
        reader,
        number: 0,
        buf: Vec::new(),
    };
    let mut prev: Option<(u64, String)> = None;
    let mut current = lines.next()?;
    while let Some((n, parsed)) = current {
        let p = match parsed {
            Ok(p) => p,
            Err(reason) => {
                report.first_break = Some(ChainBreak {
                    line: n,
                    kind: BreakKind::Malformed,
                    reason,
                });
                break;
            }
        };
        let next = lines.next()?;
        let outcome = match &prev {
            None => first_line(&mut report, &p, genesis.as_deref()),
            Some((prev_seq, prev_hash)) => {
                let next_seq = match &next {
                    Some((_, Ok(q))) => Some(q.seq),
                    _ => None,
                };
                follow(
                    &mut report,
                    n,
                    &p,
                    *prev_seq,
                    prev_hash,
                    next_seq,
                    genesis.as_deref(),
                )
            }
        };
        if let Err(b) = outcome {
            report.first_break = Some(b);
            break;
        }
        report.records += 1;
        report.first_seq.get_or_insert(p.seq);
        report.last_seq = Some(p.seq);
        prev = Some((p.seq, p.hash));
        current = next;
    }
    Ok(report)
}

fn first_line(
    report: &mut VerifyReport,
    p: &Parsed,
    genesis: Option<&str>,
) -> Result<(), ChainBreak> {
    if p.seq != 1 {
        report.starts_mid_chain = true;
        report.notes.push(format!(
            "the file starts mid-chain at seq {} (rotated log?): line 1's prev_hash cannot be checked",
            p.seq
        ));
        return Ok(());
    }
    chain_start(report, 1, p, genesis)
}

/// A line with `seq` 1: the device was enabled (or the node started) here.
fn chain_start(
    report: &mut VerifyReport,
    n: u64,
    p: &Parsed,
    genesis: Option<&str>,
) -> Result<(), ChainBreak> {
    match genesis {
        Some(g) if g != p.prev_hash => Err(ChainBreak {
            line: n,
            kind: BreakKind::Edited,
            reason: "seq 1 but prev_hash is not this device's genesis hash".into(),
        }),
        Some(_) => {
            if n > 1 {
                report.notes.push(format!(
                    "the chain restarts at line {n} (device re-enabled or node restarted)"
                ));
            }
            Ok(())
        }
        None => {
            report.notes.push(format!(
                "the chain starts at line {n}; its genesis hash was not checked (give the device path to check it)"
            ));
            Ok(())
        }
    }
}

fn follow(
    report: &mut VerifyReport,
    n: u64,
    p: &Parsed,
    prev_seq: u64,
    prev_hash: &str,
    next_seq: Option<u64>,
    genesis: Option<&str>,
) -> Result<(), ChainBreak> {
    let at = |line, kind, reason: String| ChainBreak { line, kind, reason };
    let expected = prev_seq.saturating_add(1).saturating_add(p.missed);
    if p.seq == 1 && p.missed == 0 && p.prev_hash != prev_hash {
        return chain_start(report, n, p, genesis);
    }
    if p.prev_hash != prev_hash {
        if p.seq <= prev_seq {
            return Err(at(
                n,
                BreakKind::Reordered,
                format!(
                    "seq {} comes after seq {prev_seq}: records out of order",
                    p.seq
                ),
            ));
        }
        if p.seq == expected {
            return Err(at(
                n - 1,
                BreakKind::Edited,
                format!(
                    "record edited: line {} does not match the prev_hash recorded in line {n}",
                    n - 1
                ),
            ));
        }
        // After a deletion seq keeps rising; after a move it falls back.
        if let Some(q) = next_seq.filter(|q| *q < p.seq) {
            return Err(at(
                n,
                BreakKind::Reordered,
                format!(
                    "records out of order: line {n} has seq {} but line {} has seq {q}",
                    p.seq,
                    n + 1
                ),
            ));
        }
        let deleted = p.seq - prev_seq - 1;
        return Err(at(
            n,
            BreakKind::Deleted,
            format!(
                "{deleted} record(s) deleted before this line: seq jumps from {prev_seq} to {}",
                p.seq
            ),
        ));
    }
    if p.seq != expected {
        return Err(at(
            n,
            BreakKind::Edited,
            format!(
                "record edited: seq {} does not follow seq {prev_seq}{}",
                p.seq,
                if p.missed > 0 {
                    format!(" with {} missed", p.missed)
                } else {
                    String::new()
                }
            ),
        ));
    }
    if p.missed > 0 {
        report.gaps.push(Gap {
            line: n,
            missed: p.missed,
        });
        report.notes.push(format!(
            "warning: line {n}: the device missed {} record(s) before this one (seq {}..{})",
            p.missed,
            prev_seq + 1,
            p.seq - 1
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::chain::Chain;
    use super::*;

    /// A log of `n` records as a device at `file/` would write it.
    fn log(n: u64) -> Vec<Vec<u8>> {
        let mut chain = Chain::new("file/");
        (0..n)
            .map(|i| {
                let line = chain
                    .seal("", &json!({"type": "request", "i": i}))
                    .expect("seal");
                chain.written(&line);
                line.bytes
            })
            .collect()
    }

    fn check(lines: &[Vec<u8>]) -> VerifyReport {
        verify_reader_with(&lines.concat()[..], Some("file/")).expect("read")
    }

    fn broken_at(lines: &[Vec<u8>]) -> (u64, BreakKind, String) {
        let r = check(lines);
        let b = r.first_break.expect("a break");
        (b.line, b.kind, b.reason)
    }

    #[test]
    fn an_untouched_log_verifies() {
        let r = check(&log(5));
        assert!(r.is_intact(), "{r:?}");
        assert_eq!(r.records, 5);
        assert_eq!(r.summary(), "ok: 5 records, seq 1..5, chain intact");
        assert!(!r.starts_mid_chain);
        let r = verify_reader(&log(3).concat()[..]).expect("read");
        assert!(r.is_intact());
        assert_eq!(check(&[]).summary(), "ok: 0 records");
    }

    #[test]
    fn an_edited_record_is_pinpointed() {
        let mut lines = log(5);
        lines[2] = String::from_utf8(lines[2].clone())
            .expect("utf8")
            .replace("\"i\":2", "\"i\":9")
            .into_bytes();
        let (line, kind, reason) = broken_at(&lines);
        assert_eq!((line, kind), (3, BreakKind::Edited), "{reason}");
        assert!(check(&lines).summary().starts_with("BROKEN at line 3: "));
    }

    #[test]
    fn an_edited_seq_is_pinpointed_even_on_the_last_line() {
        let mut lines = log(4);
        lines[3] = String::from_utf8(lines[3].clone())
            .expect("utf8")
            .replace("\"seq\":4", "\"seq\":7")
            .into_bytes();
        assert_eq!(broken_at(&lines).0, 4);
    }

    #[test]
    fn a_deleted_record_is_pinpointed() {
        let mut lines = log(6);
        lines.remove(3);
        let (line, kind, reason) = broken_at(&lines);
        assert_eq!((line, kind), (4, BreakKind::Deleted), "{reason}");
        assert!(reason.contains("1 record(s) deleted"), "{reason}");
    }

    #[test]
    fn swapped_records_are_pinpointed() {
        let mut lines = log(6);
        lines.swap(2, 3);
        let (line, kind, reason) = broken_at(&lines);
        assert_eq!((line, kind), (3, BreakKind::Reordered), "{reason}");
        let mut lines = log(6);
        lines.swap(1, 4);
        assert_eq!(broken_at(&lines).1, BreakKind::Reordered);
    }

    #[test]
    fn malformed_and_truncated_lines_are_pinpointed() {
        let mut lines = log(4);
        lines[1] = b"not json\n".to_vec();
        assert_eq!(broken_at(&lines).0, 2);
        assert_eq!(broken_at(&lines).1, BreakKind::Malformed);

        let mut lines = log(4);
        lines[2] = b"{\"seq\": 3}\n".to_vec();
        let (line, kind, reason) = broken_at(&lines);
        assert_eq!((line, kind), (3, BreakKind::Malformed), "{reason}");
        assert!(reason.contains("prev_hash"), "{reason}");

        // A write cut short by a crash: the last line has no newline.
        let mut lines = log(4);
        let cut = lines[3].len() / 2;
        lines[3].truncate(cut);
        let (line, kind, reason) = broken_at(&lines);
        assert_eq!((line, kind), (4, BreakKind::Malformed), "{reason}");
        assert!(reason.contains("truncated"), "{reason}");

        let mut lines = log(4);
        lines.insert(2, b"\n".to_vec());
        assert_eq!(broken_at(&lines).0, 3);
    }

    #[test]
    fn a_file_starting_mid_chain_is_accepted_with_a_note() {
        let lines = log(6);
        let r = check(&lines[2..]);
        assert!(r.is_intact(), "{r:?}");
        assert!(r.starts_mid_chain);
        assert_eq!(r.first_seq, Some(3));
        assert!(r.notes.iter().any(|n| n.contains("mid-chain")), "{r:?}");
    }

    #[test]
    fn missed_records_are_warnings() {
        let mut chain = Chain::new("file/");
        let mut lines = Vec::new();
        for i in 0..5 {
            let line = chain.seal("", &json!({"i": i})).expect("seal");
            if i == 2 {
                chain.failed(&line);
                chain.skip(2);
                continue;
            }
            chain.written(&line);
            lines.push(line.bytes);
        }
        let r = check(&lines);
        assert!(r.is_intact(), "{r:?}");
        assert_eq!(r.gaps, vec![Gap { line: 3, missed: 3 }]);
        assert_eq!(r.last_seq, Some(7));
        assert!(r.summary().contains("3 records missed"), "{}", r.summary());
    }

    #[test]
    fn a_restart_is_a_note_and_a_forged_start_a_break() {
        let mut lines = log(3);
        lines.extend(log(2));
        let r = check(&lines);
        assert!(r.is_intact(), "{r:?}");
        assert!(r.notes.iter().any(|n| n.contains("restarts at line 4")));
        let forged = verify_reader_with(&lines.concat()[..], Some("other/")).expect("read");
        assert_eq!(forged.first_break.map(|b| b.line), Some(1));
    }

    #[test]
    fn prefixes_are_part_of_the_hash() {
        let mut chain = Chain::new("file/");
        let mut lines = Vec::new();
        for i in 0..3 {
            let line = chain.seal("audit: ", &json!({"i": i})).expect("seal");
            chain.written(&line);
            lines.push(line.bytes);
        }
        assert!(check(&lines).is_intact());
        lines[0] = String::from_utf8(lines[0].clone())
            .expect("utf8")
            .replacen("audit: ", "audix: ", 1)
            .into_bytes();
        assert_eq!(broken_at(&lines).0, 1);
    }
}
