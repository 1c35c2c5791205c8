"""The Python Vault client hvac drives machine identity and leases on a
running `sigil server`: AppRole end to end (role, role ID, secret IDs,
login, using the token), then dynamic PostgreSQL credentials under leases
(lookup, renew, list, revocation with the token that asked for them, and
revoke-prefix). Run by cells/tests/hvac_identity.rs:

    python3 identity.py URL PG_CONNECTION_URL PG_USER PG_PASSWORD

Each step asserts; any failure exits non-zero with a traceback. On success
the last line of stdout is a JSON object: the database users handed out
(all revoked by the end) and secrets that must never reach the server log.
"""

import json
import sys
import time

import hvac
import hvac.exceptions as exc


def expect(exc_type, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError(f"{fn.__name__} did not raise {exc_type.__name__}")


def wait_until(what, check, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def lease_gone(client, lease_id):
    try:
        client.sys.read_lease(lease_id)
        return False
    except exc.InvalidRequest:
        return True


def main():
    url, pg_url, pg_user, pg_password = sys.argv[1:5]
    root = hvac.Client(url=url)
    out = root.sys.initialize(secret_shares=1, secret_threshold=1)
    root.sys.submit_unseal_key(out["keys"][0])
    root.token = out["root_token"]
    assert root.is_authenticated()

    # --- AppRole ---------------------------------------------------------
    root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy(
        "app",
        'path "database/creds/app" { capabilities = ["read"] }\n'
        'path "sys/leases/lookup" { capabilities = ["update"] }\n'
        'path "sys/leases/renew" { capabilities = ["update"] }\n',
    )
    root.auth.approle.create_or_update_approle(
        "ci", token_policies=["app"], token_ttl="20m", token_max_ttl="1h",
        secret_id_num_uses=3, secret_id_ttl="10m",
    )
    role = root.auth.approle.read_role("ci")["data"]
    assert role["token_policies"] == ["app"], role
    assert role["token_ttl"] == 1200, role
    assert "ci" in root.auth.approle.list_roles()["data"]["keys"]
    role_id = root.auth.approle.read_role_id("ci")["data"]["role_id"]
    generated = root.auth.approle.generate_secret_id("ci", metadata={"pipeline": "build-42"})["data"]
    secret_id = generated["secret_id"]
    assert generated["secret_id_num_uses"] == 3, generated
    accessors = root.auth.approle.list_secret_id_accessors("ci")["data"]["keys"]
    assert accessors == [generated["secret_id_accessor"]], accessors
    looked = root.auth.approle.read_secret_id("ci", secret_id)["data"]
    assert looked["metadata"] == {"pipeline": "build-42"}, looked

    app = hvac.Client(url=url)
    login = app.auth.approle.login(role_id=role_id, secret_id=secret_id)
    assert app.is_authenticated()
    assert login["auth"]["policies"] == ["app", "default"], login["auth"]
    assert login["auth"]["metadata"]["role_name"] == "ci"
    assert login["auth"]["metadata"]["pipeline"] == "build-42"
    me = app.auth.token.lookup_self()["data"]
    assert me["identity"] == "approle:ci", me
    assert me["path"] == "auth/approle/login", me
    assert me["orphan"] is True

    # A wrong secret ID, and one used up, are refused with 400.
    bad = hvac.Client(url=url)
    expect(exc.InvalidRequest, bad.auth.approle.login, role_id=role_id, secret_id="not-it")
    for _ in range(2):
        hvac.Client(url=url).auth.approle.login(role_id=role_id, secret_id=secret_id)
    expect(exc.InvalidRequest, bad.auth.approle.login, role_id=role_id, secret_id=secret_id)
    # Destroyed secret IDs are gone.
    other = root.auth.approle.generate_secret_id("ci")["data"]["secret_id"]
    root.auth.approle.destroy_secret_id("ci", other)
    expect(exc.InvalidRequest, bad.auth.approle.login, role_id=role_id, secret_id=other)

    # --- Database credentials under leases --------------------------------
    root.sys.enable_secrets_engine("database")
    root.secrets.database.configure(
        name="pg", plugin_name="postgresql-database-plugin",
        connection_url=pg_url, username=pg_user, password=pg_password,
        allowed_roles=["app"],
    )
    cfg = root.secrets.database.read_connection("pg")["data"]
    assert pg_password not in json.dumps(cfg), "the root password was returned"
    root.secrets.database.create_role(
        name="app", db_name="pg",
        creation_statements=[
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        ],
        default_ttl="1h", max_ttl="2h",
    )
    creds = app.secrets.database.generate_credentials("app")
    lease_id = creds["lease_id"]
    users = [creds["data"]["username"]]
    secrets = [creds["data"]["password"], secret_id, app.token]
    assert lease_id.startswith("database/creds/app/"), lease_id
    assert creds["lease_duration"] == 3600 and creds["renewable"] is True, creds
    lease = app.sys.read_lease(lease_id)["data"]
    assert lease["id"] == lease_id and 0 < lease["ttl"] <= 3600, lease
    renewed = app.sys.renew_lease(lease_id, increment=600)
    assert renewed["lease_id"] == lease_id and renewed["lease_duration"] == 600, renewed
    listed = root.sys.list_leases("database/creds/app")["data"]["keys"]
    assert lease_id.rsplit("/", 1)[1] in listed, listed

    # Revoking the app's token revokes its lease (the leader's manager).
    root.auth.token.revoke(app.token)
    wait_until("the revoked token's lease to go", lambda: lease_gone(root, lease_id))

    # revoke-prefix takes a whole role's leases at once.
    app2 = hvac.Client(url=url)
    fresh = root.auth.approle.generate_secret_id("ci")["data"]["secret_id"]
    app2.auth.approle.login(role_id=role_id, secret_id=fresh)
    ids = []
    for _ in range(3):
        c = app2.secrets.database.generate_credentials("app")
        ids.append(c["lease_id"])
        users.append(c["data"]["username"])
        secrets.append(c["data"]["password"])
    root.sys.revoke_prefix("database/creds/app")
    for i in ids:
        assert lease_gone(root, i), i
    expect(exc.InvalidPath, root.sys.list_leases, "database/creds/app")

    print(json.dumps({"ok": True, "users": users, "secrets": secrets}))


if __name__ == "__main__":
    main()
