//! Leases in a three-node cell with a real PostgreSQL: credentials handed
//! out through any node are revoked by whichever node leads when they
//! expire, including a leader elected after the one that issued them is
//! gone (it loads nothing at election: it reads the due index), and a
//! revocation asked of a follower is carried out once.

mod common;

use std::time::Duration;

use common::{call, strings, wait_for};
use sigil_cell::cluster_pki::{CellCa, CellId};
use sigil_cell::server::{self, Running};
use sigil_cell::testkit::postgres::PgServer;

const WAIT: Duration = Duration::from_secs(30);

fn leader_of(nodes: &[&Running]) -> Option<usize> {
    nodes
        .iter()
        .position(|n| n.node.cell().is_some_and(|c| c.is_leader()))
}

async fn role_exists(pg: &PgServer, user: &str) -> bool {
    let client = pg.client().await.expect("superuser client");
    let n: i64 = client
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .expect("query")
        .get(0);
    n == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_revokes_leases_even_after_the_one_that_issued_them_is_gone() {
    let pg = PgServer::start().await.expect("start PostgreSQL");
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = CellCa::generate(&CellId::new("test-cell").expect("cell")).expect("ca");
    let leases = "[leases]\ntick_ms = 200\n";
    let config = |name: &str, join: Option<&str>| {
        common::cell_node_config(&tmp.path().join(name), name, &ca, join, "", leases)
    };
    let n1 = server::start(&config("n1", None)).await.expect("start n1");
    let seed = n1.node.cell().expect("cell").node().cluster_addr.clone();
    let n2 = server::start(&config("n2", Some(&seed)))
        .await
        .expect("start n2");
    let n3 = server::start(&config("n3", Some(&seed)))
        .await
        .expect("start n3");
    common::wait_voters(&[&n1, &n2, &n3], 3);
    let urls: Vec<String> = [&n1, &n2, &n3].iter().map(|n| n.http_url()).collect();
    let (code, init) = call(
        &urls[0],
        "PUT",
        "sys/init",
        None,
        r#"{"secret_shares":1,"secret_threshold":1}"#,
    );
    assert_eq!(code, 200, "{init}");
    let key = strings(&init, "keys").remove(0);
    let root = init["root_token"].as_str().expect("root").to_owned();
    for url in &urls {
        wait_for(WAIT, || {
            let (_, s) = call(url, "GET", "sys/seal-status", None, "");
            (s["initialized"] == true).then_some(())
        })
        .expect("initialised everywhere");
        let (code, s) = call(
            url,
            "PUT",
            "sys/unseal",
            None,
            &format!(r#"{{"key":"{key}"}}"#),
        );
        assert_eq!(code, 200, "{s}");
    }
    let nodes = [&n1, &n2, &n3];
    let leader = leader_of(&nodes).expect("a leader");
    let follower = (leader + 1) % 3;
    let via = |i: usize, method: &str, path: &str, body: &str| {
        call(&urls[i], method, path, Some(&root), body)
    };

    // Set up through a follower: writes are forwarded to the leader.
    let (code, b) = via(
        follower,
        "POST",
        "sys/mounts/database",
        r#"{"type":"database"}"#,
    );
    assert_eq!(code, 204, "{b}");
    let cfg = serde_json::json!({
        "plugin_name": "postgresql-database-plugin",
        "connection_url": pg.connection_url_template(),
        "username": pg.superuser(),
        "password": pg.password(),
        "allowed_roles": ["short", "long"],
    });
    let (code, b) = via(follower, "POST", "database/config/pg", &cfg.to_string());
    assert_eq!(code, 204, "{b}");
    for (role, ttl) in [("short", "4s"), ("long", "1h")] {
        let body = serde_json::json!({
            "db_name": "pg",
            "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
            "default_ttl": ttl,
        });
        let (code, b) = via(
            follower,
            "POST",
            &format!("database/roles/{role}"),
            &body.to_string(),
        );
        assert_eq!(code, 204, "{b}");
    }
    let creds = |i: usize, role: &str| {
        let (code, b) = via(i, "GET", &format!("database/creds/{role}"), "");
        assert_eq!(code, 200, "{b}");
        (
            b["data"]["username"].as_str().expect("user").to_owned(),
            b["lease_id"].as_str().expect("lease").to_owned(),
        )
    };
    let (short_user, _) = creds(follower, "short");
    let (long_user, long_lease) = creds(leader, "long");
    assert!(role_exists(&pg, &short_user).await && role_exists(&pg, &long_user).await);

    // The leader that issued them goes away before the short one expires.
    let mut others: Vec<Running> = Vec::new();
    let mut old = None;
    for (i, n) in [n1, n2, n3].into_iter().enumerate() {
        if i == leader {
            old = Some(n);
        } else {
            others.push(n);
        }
    }
    old.expect("old leader").shutdown().await;
    let survivors: Vec<&Running> = others.iter().collect();
    let new_leader = wait_for(WAIT, || leader_of(&survivors)).expect("a new leader");

    // The new leader revokes the expired lease: the user is dropped.
    let deadline = std::time::Instant::now() + WAIT;
    while role_exists(&pg, &short_user).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired lease was never revoked by the new leader"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(role_exists(&pg, &long_user).await, "the long lease stays");

    // A revocation asked of the follower is done once, by the leader.
    let follower_url = survivors[1 - new_leader].http_url();
    let (code, b) = call(
        &follower_url,
        "PUT",
        "sys/leases/revoke",
        Some(&root),
        &serde_json::json!({ "lease_id": long_lease }).to_string(),
    );
    assert_eq!(code, 204, "{b}");
    assert!(!role_exists(&pg, &long_user).await);
    let (code, _) = call(
        &follower_url,
        "PUT",
        "sys/leases/lookup",
        Some(&root),
        &serde_json::json!({ "lease_id": long_lease }).to_string(),
    );
    assert_eq!(code, 400, "the lease is gone everywhere");
    for n in others {
        n.shutdown().await;
    }
}
