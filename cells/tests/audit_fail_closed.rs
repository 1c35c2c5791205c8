//! Audit is fail-closed, and one stuck device does not stall requests
//! (docs/audit.md):
//! - the only device's file becomes unwritable (its path is re-pointed at
//!   `/dev/full` and the node reopens it on SIGHUP, as after a log rotation
//!   gone wrong) → requests fail with 500 and change nothing;
//! - a socket device whose peer stopped reading, beside a working file
//!   device → every request still succeeds and the file records them all.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use common::{ServerProcess, call, init_unseal};

fn enable_kv(base: &str, root: &str) {
    let (code, body) = call(
        base,
        "POST",
        "sys/mounts/secret",
        Some(root),
        r#"{"type":"kv","options":{"version":"2"}}"#,
    );
    assert_eq!(code, 204, "{body}");
}

#[test]
fn requests_fail_closed_when_the_only_audit_device_cannot_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(dir.path(), "");
    let server = ServerProcess::start(&config, &[]);
    let base = server.http_url.clone();
    let root = init_unseal(&base);
    enable_kv(&base, &root);

    let real = dir.path().join("audit.log");
    let link = dir.path().join("current.log");
    std::fs::write(&real, b"").expect("create log");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let body = format!(
        r#"{{"type":"file","options":{{"file_path":{:?}}}}}"#,
        link.display().to_string()
    );
    let (code, out) = call(&base, "PUT", "sys/audit/file", Some(&root), &body);
    assert_eq!(code, 204, "{out}");
    let (code, out) = call(
        &base,
        "POST",
        "secret/data/app",
        Some(&root),
        r#"{"data":{"v":"1"}}"#,
    );
    assert_eq!(code, 200, "{out}");
    assert!(
        std::fs::read_to_string(&real)
            .expect("log")
            .contains("secret/data/app")
    );

    // Rotation gone wrong: the path now names a file every write to fails.
    std::fs::remove_file(&link).expect("unlink");
    std::os::unix::fs::symlink("/dev/full", &link).expect("symlink to /dev/full");
    let hangup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP");
    };
    hangup();
    let refused = common::wait_for(Duration::from_secs(10), || {
        let (code, _) = call(&base, "GET", "secret/data/app", Some(&root), "");
        (code == 500).then_some(())
    });
    assert!(
        refused.is_some(),
        "reads were not refused after the device broke"
    );

    let (code, out) = call(
        &base,
        "POST",
        "secret/data/app",
        Some(&root),
        r#"{"data":{"v":"2"}}"#,
    );
    assert_eq!(code, 500, "{out}");
    assert_eq!(out["errors"][0], "internal error");
    let (code, _) = call(&base, "DELETE", "sys/mounts/secret", Some(&root), "");
    assert_eq!(code, 500, "disabling a mount is refused too");

    // Repair the path and reopen: the write above never happened.
    std::fs::remove_file(&link).expect("unlink");
    std::os::unix::fs::symlink(&real, &link).expect("symlink back");
    hangup();
    let back = common::wait_for(Duration::from_secs(10), || {
        let (code, out) = call(&base, "GET", "secret/data/app", Some(&root), "");
        (code == 200).then_some(out)
    })
    .expect("requests are served again once the device can write");
    assert_eq!(back["data"]["data"]["v"], "1");
    assert_eq!(back["data"]["metadata"]["version"], 1);
}

#[test]
fn a_hung_socket_device_does_not_stall_requests_while_a_file_device_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(dir.path(), "");
    let server = ServerProcess::start(&config, &[]);
    let base = server.http_url.clone();
    let root = init_unseal(&base);
    enable_kv(&base, &root);

    // A collector that accepts, reads nothing, and keeps the connection.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stuck_tx, stuck_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((conn, _)) = listener.accept() {
            let _ = stuck_tx.send(());
            std::thread::sleep(Duration::from_secs(600));
            drop(conn);
        }
    });
    let body = format!(
        r#"{{"type":"socket","options":{{"address":"{addr}","socket_type":"tcp","write_timeout":"200ms","log_raw":"true"}}}}"#
    );
    let (code, out) = call(&base, "PUT", "sys/audit/stuck", Some(&root), &body);
    assert_eq!(code, 204, "{out}");
    let log = dir.path().join("audit.log");
    let body = format!(
        r#"{{"type":"file","options":{{"file_path":{:?}}}}}"#,
        log.display().to_string()
    );
    let (code, out) = call(&base, "PUT", "sys/audit/file", Some(&root), &body);
    assert_eq!(code, 204, "{out}");

    // Raw 1 MiB records: the stuck peer's socket buffers fill after a few.
    let big = "x".repeat(1 << 20);
    let writes = 24;
    for i in 0..writes {
        let (code, out) = call(
            &base,
            "POST",
            &format!("secret/data/k{i}"),
            Some(&root),
            &format!(r#"{{"data":{{"v":"{big}"}}}}"#),
        );
        assert_eq!(code, 200, "write {i}: {out}");
    }
    assert!(
        stuck_rx.recv_timeout(Duration::from_secs(5)).is_ok(),
        "the socket device connected"
    );

    let mut text = String::new();
    std::fs::File::open(&log)
        .expect("log")
        .read_to_string(&mut text)
        .expect("read");
    for i in 0..writes {
        let path = format!("\"path\":\"secret/data/k{i}\"");
        let n = text.lines().filter(|l| l.contains(&path)).count();
        assert_eq!(n, 2, "request and response of {path} in the file device");
    }
    // The stuck device's lost records show in the metrics.
    let (code, metrics) = call(&base, "GET", "sys/metrics", Some(&root), "");
    assert_eq!(code, 200, "{metrics}");
    let lost: u64 = metrics["data"]["Counters"]
        .as_array()
        .expect("counters")
        .iter()
        .filter(|c| {
            c["Name"] == "sigil.audit.device.records"
                && c["Labels"]["device"] == "stuck/"
                && c["Labels"]["outcome"] != "written"
        })
        .map(|c| c["Count"].as_u64().unwrap_or(0))
        .sum();
    assert!(lost > 0, "the stuck device lost records: {metrics}");
}
