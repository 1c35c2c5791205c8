//! The Python client hvac drives AppRole and leased PostgreSQL credentials
//! on a real `sigil server` and a real PostgreSQL (tests/hvac/identity.py
//! holds the steps). Afterwards every database user it was handed is gone
//! from PostgreSQL, and no credential reached the server's log.

mod common;

use sigil_cell::testkit::postgres::PgServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hvac_drives_approle_and_leased_database_credentials() {
    let pg = PgServer::start().await.expect("start PostgreSQL");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(dir.path(), "[leases]\ntick_ms = 200\n");
    let server = common::ServerProcess::start(&config, &[]);
    let url = server.http_url.clone();
    let (pg_url, user, password) = (
        pg.connection_url_template(),
        pg.superuser().to_owned(),
        pg.password().to_owned(),
    );
    let result = tokio::task::spawn_blocking(move || {
        common::run_hvac_script("identity.py", &[&url, &pg_url, &user, &password])
    })
    .await
    .expect("hvac script");
    assert_eq!(result["ok"], true);

    let client = pg.client().await.expect("superuser client");
    let users = common::strings(&result, "users");
    assert_eq!(users.len(), 4);
    for u in &users {
        let n: i64 = client
            .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[u])
            .await
            .expect("query")
            .get(0);
        assert_eq!(n, 0, "{u} outlived its lease");
    }
    let log = server.stderr();
    for s in common::strings(&result, "secrets") {
        assert!(!log.contains(&s), "a credential reached the server log");
    }
}
