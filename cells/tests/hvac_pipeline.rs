//! The Python client hvac drives the request pipeline of a real `sigil
//! server`: KV v1 and v2, tokens, policies, mounts, audit, wrapping and
//! cubbyhole (tests/hvac/pipeline.py holds the steps and assertions). Then
//! the audit log it produced is checked: it verifies, and no token or secret
//! value appears in it, or in the server's log, in clear.

mod common;

#[test]
fn hvac_drives_the_request_pipeline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(dir.path(), "");
    let server = common::ServerProcess::start(&config, &[]);
    let audit_file = dir.path().join("audit.log");
    let audit_path = audit_file.to_str().expect("utf-8 path");
    let result = common::run_hvac_script("pipeline.py", &[&server.http_url, audit_path]);
    assert_eq!(result["ok"], true);

    let log = std::fs::read_to_string(&audit_file).expect("audit log written");
    assert!(
        log.lines().count() >= 4,
        "requests after enabling were audited:\n{log}"
    );
    let mut secrets = common::strings(&result, "secrets");
    secrets.push(
        result["root_token"]
            .as_str()
            .expect("root token")
            .to_owned(),
    );
    let server_log = server.stderr();
    for s in &secrets {
        assert!(
            !log.contains(s.as_str()),
            "{s:?} reached the audit log in clear"
        );
        assert!(
            !server_log.contains(s.as_str()),
            "{s:?} reached the server log"
        );
    }

    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["audit", "verify", audit_path])
        .output()
        .expect("run sigil audit verify");
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "verify failed: {out}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(out.starts_with("ok"), "{out}");

    // Tampering is pinpointed: an edited, a deleted and two swapped records.
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 6, "enough records to tamper with");
    let tampered = |name: &str, new: Vec<String>| -> (i32, String) {
        let path = dir.path().join(name);
        std::fs::write(&path, new.join("\n") + "\n").expect("write copy");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["audit", "verify", path.to_str().expect("utf-8")])
            .output()
            .expect("run verify");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let owned: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();

    let mut edited = owned.clone();
    edited[2] = edited[2].replacen("\"type\":\"", "\"type\":\"x", 1);
    assert_ne!(edited[2], owned[2], "the edit changed the record");
    let (code, out) = tampered("edited.log", edited);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("BROKEN at line 3"),
        "edited record 3: {out}"
    );

    let mut deleted = owned.clone();
    deleted.remove(3);
    let (code, out) = tampered("deleted.log", deleted);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("BROKEN at line 4"),
        "record 4 deleted: {out}"
    );

    let mut swapped = owned.clone();
    swapped.swap(1, 2);
    let (code, out) = tampered("swapped.log", swapped);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("BROKEN at line 2"),
        "records 2 and 3 swapped: {out}"
    );

    let (code, out) = tampered("untouched.log", owned);
    assert_eq!(code, 0, "{out}");
}
