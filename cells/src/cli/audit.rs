//! `sigil audit verify`: checks an audit log's hash chain offline
//! (docs/audit.md, "Verifying a log").

use std::path::Path;
use std::process::ExitCode;

use crate::audit::verify::verify_file_with;

/// Verifies the log at `path` and prints one verdict line to stdout:
/// `ok: N records, seq A..B, chain intact` or `BROKEN at line N: <reason>`.
/// Notes and warnings (mid-chain start, missed records) follow on stderr;
/// `json` prints the whole report instead. With `device_path` (`file/`),
/// chain starts are checked against that device's genesis hash. Exit code 0
/// when the chain holds, 1 on a break or an unreadable file.
pub fn verify_command(path: &Path, device_path: Option<&str>, json: bool) -> ExitCode {
    let report = match verify_file_with(path, device_path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot read {}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("Error: cannot render the report: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        println!("{}", report.summary());
        for note in &report.notes {
            eprintln!("note: {note}");
        }
    }
    if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_verdict() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.log");
        assert_eq!(verify_command(&missing, None, false), ExitCode::from(1));
        let empty = dir.path().join("empty.log");
        std::fs::write(&empty, b"").expect("write");
        assert_eq!(verify_command(&empty, None, true), ExitCode::SUCCESS);
        let bad = dir.path().join("bad.log");
        std::fs::write(&bad, b"garbage\n").expect("write");
        assert_eq!(verify_command(&bad, None, false), ExitCode::from(1));
    }
}
