//! The database engine against a real PostgreSQL (started by
//! [`PgServer`](crate::testkit::postgres::PgServer) in a temporary
//! directory on a random loopback port), through the whole pipeline and
//! the lease machinery of an in-memory node.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::api_error::ApiError;
use crate::lease::{LeaseSettings, RetryPolicy};
use crate::logical::Operation;
use crate::node_testing::TestNode;
use crate::testkit::postgres::PgServer;

static SERVER: OnceCell<PgServer> = OnceCell::const_new();

async fn server() -> &'static PgServer {
    SERVER
        .get_or_init(|| async {
            match PgServer::start().await {
                Ok(s) => s,
                Err(e) => panic!("cannot start PostgreSQL for the tests: {e}"),
            }
        })
        .await
}

fn settings(max_attempts: u32) -> LeaseSettings {
    LeaseSettings {
        tick: Duration::from_millis(50),
        batch: 16,
        concurrency: 4,
        revoke_timeout: Duration::from_secs(20),
        retry: RetryPolicy {
            base: Duration::from_millis(50),
            max_delay: Duration::from_millis(100),
            max_attempts,
        },
    }
}

/// Runs `sql` as the superuser.
async fn admin(pg: &PgServer, sql: &str) {
    pg.client()
        .await
        .expect("superuser client")
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn admin_count(pg: &PgServer, sql: &str) -> i64 {
    pg.client()
        .await
        .expect("superuser client")
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Logs in to the test database as `user`.
async fn login(
    pg: &PgServer,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = pg.config();
    config.user(user).password(password);
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A node with the database engine at `database/`, connection `pg` and a
/// dynamic role `name` reading table `name_things`.
async fn setup(name: &str, max_attempts: u32) -> (TestNode, &'static PgServer) {
    let pg = server().await;
    admin(
        pg,
        &format!("CREATE TABLE IF NOT EXISTS {name}_things (id int); INSERT INTO {name}_things VALUES (1);"),
    )
    .await;
    let t = TestNode::new(settings(max_attempts)).await;
    t.ok(
        Operation::Update,
        "sys/mounts/database",
        json!({"type": "database"}),
    )
    .await;
    t.ok(
        Operation::Update,
        "database/config/pg",
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": pg.connection_url_template(),
            "username": pg.superuser(),
            "password": pg.password(),
            "allowed_roles": [name, format!("{name}-*")],
        }),
    )
    .await;
    t.ok(
        Operation::Update,
        &format!("database/roles/{name}"),
        json!({
            "db_name": "pg",
            "creation_statements": [
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                format!("GRANT SELECT ON {name}_things TO \"{{{{name}}}}\";"),
            ],
            "default_ttl": "1h",
            "max_ttl": "2h",
        }),
    )
    .await;
    (t, pg)
}

async fn creds(t: &TestNode, role: &str) -> (String, String, String) {
    let r = t
        .ok(
            Operation::Read,
            &format!("database/creds/{role}"),
            json!({}),
        )
        .await;
    let d = r.data.expect("data");
    (
        d["username"].as_str().expect("username").to_owned(),
        d["password"].as_str().expect("password").to_owned(),
        r.lease.expect("lease").lease_id,
    )
}

#[tokio::test]
async fn dynamic_credentials_work_until_their_lease_is_revoked() {
    let (t, pg) = setup("dyn", 6).await;
    let (user, password, lease) = creds(&t, "dyn").await;
    assert!(user.starts_with("v-root-dyn-"), "{user}");
    assert!(lease.starts_with("database/creds/dyn/"), "{lease}");
    let session = login(pg, &user, &password)
        .await
        .expect("login as the new user");
    let n: i64 = session
        .query_one("SELECT count(*) FROM dyn_things", &[])
        .await
        .expect("select")
        .get(0);
    assert_eq!(n, 1);
    // VALID UNTIL is the lease's expiry.
    let valid_for = admin_count(
        pg,
        &format!("SELECT extract(epoch FROM rolvaliduntil - now())::bigint FROM pg_roles WHERE rolname = '{user}'"),
    )
    .await;
    assert!((3500..=3600).contains(&valid_for), "{valid_for}");

    t.ok(
        Operation::Update,
        "sys/leases/revoke",
        json!({"lease_id": lease}),
    )
    .await;
    // The open session is gone at once, and no new login works.
    assert!(
        session.query_one("SELECT 1", &[]).await.is_err(),
        "the open session survived revocation"
    );
    assert!(
        login(pg, &user, &password).await.is_err(),
        "login still works"
    );
    assert_eq!(
        admin_count(
            pg,
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")
        )
        .await,
        0
    );
    assert!(t.lookup(&lease).await.is_err());
}

#[tokio::test]
async fn expired_leases_drop_their_users_and_renewal_moves_valid_until() {
    let (t, pg) = setup("exp", 6).await;
    t.ok(
        Operation::Update,
        "database/roles/exp",
        json!({"default_ttl": 2}),
    )
    .await;
    let (user, _, lease) = creds(&t, "exp").await;
    let before = admin_count(
        pg,
        &format!("SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = '{user}'"),
    )
    .await;
    let r = t
        .ok(
            Operation::Update,
            "sys/leases/renew",
            json!({"lease_id": lease, "increment": 3}),
        )
        .await;
    assert_eq!(r.lease.expect("lease").ttl, 3);
    let after = admin_count(
        pg,
        &format!("SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = '{user}'"),
    )
    .await;
    assert!(
        after > before,
        "renewal must move VALID UNTIL ({before} -> {after})"
    );
    let p = t.node.pipeline().await.expect("pipeline");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        p.expire_due().await.expect("round");
        let left = admin_count(
            pg,
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'"),
        )
        .await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the expired user was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(t.lookup(&lease).await.is_err());
}

#[tokio::test]
async fn an_unreachable_database_leaves_no_lease_and_failed_revocations_become_irrevocable() {
    let (t, pg) = setup("down", 2).await;
    let (user, _, lease) = creds(&t, "down").await;
    // Point the connection at a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    t.ok(
        Operation::Update,
        "database/config/pg",
        json!({
            "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{closed}/postgres"),
            "verify_connection": false,
        }),
    )
    .await;
    let e = t
        .call(Operation::Read, "database/creds/down", json!({}))
        .await
        .expect_err("database down");
    assert_eq!(e.http_status(), 502, "{e}");
    assert!(e.to_string().contains("database \"pg\""), "{e}");
    assert!(!e.to_string().contains(pg.password()), "{e}");
    let count = t
        .ok(Operation::Read, "sys/leases/count", json!({"type": "all"}))
        .await
        .data
        .expect("data");
    assert_eq!(count["lease_count"], 1, "only the earlier lease: {count:?}");

    let e = t
        .call(
            Operation::Update,
            "sys/leases/revoke",
            json!({"lease_id": lease}),
        )
        .await
        .expect_err("revocation fails");
    assert_eq!(e.http_status(), 502);
    let info = t.lookup(&lease).await.expect("kept for a retry");
    assert_eq!(info["revocation_attempts"], 1);
    let p = t.node.pipeline().await.expect("pipeline");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        p.expire_due().await.expect("round");
        let info = t.lookup(&lease).await.expect("lease");
        if info["irrevocable"] == true {
            assert!(
                info["last_revocation_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("connect")),
                "{info}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never marked irrevocable: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The user is still there: nothing pretended otherwise.
    assert_eq!(
        admin_count(
            pg,
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")
        )
        .await,
        1
    );
    // Once the database is back, an operator's revoke-prefix finishes it.
    t.ok(
        Operation::Update,
        "database/config/pg",
        json!({"connection_url": pg.connection_url_template(), "verify_connection": true}),
    )
    .await;
    let d = t
        .ok(
            Operation::Update,
            "sys/leases/revoke-prefix/database/creds/down",
            json!({}),
        )
        .await
        .data
        .expect("data");
    assert_eq!(d["revoked"], 1, "{d:?}");
    assert_eq!(
        admin_count(
            pg,
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_creation_that_fails_half_way_runs_the_rollback_and_leaves_no_user() {
    let (t, pg) = setup("half", 6).await;
    admin(pg, "CREATE TABLE IF NOT EXISTS half_rollbacks (name text);").await;
    t.ok(
        Operation::Update,
        "database/roles/half-broken",
        json!({
            "db_name": "pg",
            "creation_statements": [
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}';",
                "GRANT SELECT ON no_such_table TO \"{{name}}\";",
            ],
            "rollback_statements": ["INSERT INTO half_rollbacks VALUES ('{{name}}');"],
        }),
    )
    .await;
    let before = admin_count(
        pg,
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-root-half-%'",
    )
    .await;
    let e = t
        .call(Operation::Read, "database/creds/half-broken", json!({}))
        .await
        .expect_err("creation fails");
    assert!(e.to_string().contains("statement 1"), "{e}");
    assert_eq!(
        admin_count(
            pg,
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-root-half-%'"
        )
        .await,
        before,
        "the half-created role was left behind"
    );
    assert_eq!(
        admin_count(pg, "SELECT count(*) FROM half_rollbacks").await,
        1
    );
    let count = t
        .ok(Operation::Read, "sys/leases/count", json!({"type": "all"}))
        .await
        .data
        .expect("data");
    assert_eq!(count["lease_count"], 0);
}

async fn static_creds(t: &TestNode) -> (String, u64) {
    let d = t
        .ok(Operation::Read, "database/static-creds/stat-svc", json!({}))
        .await
        .data
        .expect("data");
    (
        d["password"].as_str().expect("password").to_owned(),
        d["ttl"].as_u64().expect("ttl"),
    )
}

#[tokio::test]
async fn static_roles_rotate_on_schedule_and_on_demand() {
    let (t, pg) = setup("stat", 6).await;
    admin(
        pg,
        "DROP ROLE IF EXISTS stat_svc; CREATE ROLE stat_svc WITH LOGIN PASSWORD 'initial-pw-1';",
    )
    .await;
    t.ok(
        Operation::Update,
        "database/config/pg",
        json!({"allowed_roles": ["stat", "stat-svc"]}),
    )
    .await;
    t.ok(
        Operation::Update,
        "database/static-roles/stat-svc",
        json!({"db_name": "pg", "username": "stat_svc", "rotation_period": "5s"}),
    )
    .await;
    // Taken over at once: the initial password no longer works.
    assert!(login(pg, "stat_svc", "initial-pw-1").await.is_err());
    let (first, ttl) = static_creds(&t).await;
    assert!(ttl <= 5);
    login(pg, "stat_svc", &first)
        .await
        .expect("current password works");
    // The schedule: the leader's periodic work rotates it when due.
    let p = t.node.pipeline().await.expect("pipeline");
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        p.tick_engines().await;
        let (pw, _) = static_creds(&t).await;
        if pw != first {
            break pw;
        }
        assert!(Instant::now() < deadline, "never rotated on schedule");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        login(pg, "stat_svc", &first).await.is_err(),
        "old password still works"
    );
    login(pg, "stat_svc", &second)
        .await
        .expect("new password works");
    t.ok(
        Operation::Update,
        "database/rotate-role/stat-svc",
        json!({}),
    )
    .await;
    let (third, _) = static_creds(&t).await;
    assert_ne!(third, second);
    login(pg, "stat_svc", &third)
        .await
        .expect("rotated on demand");
}

#[tokio::test]
async fn root_rotation_hides_the_new_password_and_bad_input_is_refused() {
    let (t, pg) = setup("rootrot", 6).await;
    admin(
        pg,
        "DROP ROLE IF EXISTS rootrot_admin; CREATE ROLE rootrot_admin WITH LOGIN CREATEROLE PASSWORD 'admin-pw-1'; GRANT SELECT ON rootrot_things TO rootrot_admin WITH GRANT OPTION;",
    )
    .await;
    t.ok(
        Operation::Update,
        "database/config/admin",
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": pg.connection_url_template(),
            "username": "rootrot_admin",
            "password": "admin-pw-1",
            "allowed_roles": "rootrot-*",
            "password_policy": "length = 30\nrule \"charset\" {\n  charset = \"abcdefghijklmnopqrstuvwxyz\"\n  min-chars = 30\n}\n",
        }),
    )
    .await;
    // A password written into the URL itself is never shown back either.
    t.ok(
        Operation::Update,
        "database/config/literal",
        json!({"plugin_name": "postgresql-database-plugin", "connection_url": pg.url()}),
    )
    .await;
    let literal = t
        .ok(Operation::Read, "database/config/literal", json!({}))
        .await
        .data
        .expect("data");
    let shown = literal["connection_details"]["connection_url"]
        .as_str()
        .expect("url");
    assert!(
        !shown.contains(pg.password()) && shown.contains("[redacted]"),
        "{shown}"
    );
    t.ok(Operation::Update, "database/rotate-root/admin", json!({}))
        .await;
    assert!(login(pg, "rootrot_admin", "admin-pw-1").await.is_err());
    let cfg = t
        .ok(Operation::Read, "database/config/admin", json!({}))
        .await
        .data
        .expect("data");
    assert!(
        !Value::Object(cfg.clone())
            .to_string()
            .contains("password\":"),
        "{cfg:?}"
    );
    // The engine still works with the password only it knows, and its
    // passwords follow the policy.
    t.ok(
        Operation::Update,
        "database/roles/rootrot-app",
        json!({
            "db_name": "admin",
            "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        }),
    )
    .await;
    let (_, password, _) = creds(&t, "rootrot-app").await;
    assert_eq!(password.len(), 30);
    assert!(
        password.chars().all(|c| c.is_ascii_lowercase()),
        "{password}"
    );

    for (path, body) in [
        (
            "database/roles/x\"y",
            json!({"db_name": "pg", "creation_statements": "SELECT 1"}),
        ),
        (
            "database/roles/ok",
            json!({"db_name": "nope", "creation_statements": "SELECT 1"}),
        ),
        ("database/roles/ok", json!({"db_name": "pg"})),
        (
            "database/config/bad",
            json!({"plugin_name": "mysql-database-plugin", "connection_url": "x"}),
        ),
        (
            "database/config/bad",
            json!({"plugin_name": "postgresql-database-plugin"}),
        ),
        (
            "database/config/bad",
            json!({"plugin_name": "postgresql-database-plugin", "connection_url": pg.connection_url_template(), "password_policy": "length = 2"}),
        ),
        (
            "database/static-roles/inj",
            json!({"db_name": "pg", "username": "x\"; DROP TABLE rootrot_things; --", "rotation_period": 60}),
        ),
        (
            "database/static-roles/short",
            json!({"db_name": "pg", "username": "someone", "rotation_period": 1}),
        ),
    ] {
        let e = t
            .call(Operation::Update, path, body.clone())
            .await
            .expect_err(path);
        assert_eq!(e.http_status(), 400, "{path} {body}: {e}");
    }
    let e = t
        .call(Operation::Read, "database/creds/unknown", json!({}))
        .await
        .expect_err("unknown role");
    assert!(matches!(e, ApiError::InvalidRequest(_)), "{e}");
    // The roles not in allowed_roles cannot get credentials.
    t.ok(
        Operation::Update,
        "database/roles/other",
        json!({"db_name": "admin", "creation_statements": "SELECT 1"}),
    )
    .await;
    let e = t
        .call(Operation::Read, "database/creds/other", json!({}))
        .await
        .expect_err("not allowed");
    assert!(e.to_string().contains("not an allowed role"), "{e}");
    assert_eq!(
        admin_count(pg, "SELECT count(*) FROM rootrot_things").await,
        1,
        "nothing was dropped"
    );
}
