"""The Python Vault client hvac drives a running `sigil server` through the
request pipeline: KV v1 and v2 (every endpoint), tokens, policies, mounts,
audit devices, response wrapping and cubbyhole. Run by
cells/tests/hvac_pipeline.rs:

    python3 pipeline.py URL AUDIT_FILE

Each step asserts; any failure exits non-zero with a traceback. On success
the last line of stdout is a JSON object the Rust side reads (the root
token, secret values that must never reach the audit log in clear).
"""

import json
import sys
import time

import hvac
import hvac.exceptions as exc
import requests


def expect(exc_type, fn, *args, **kwargs):
    """Calls fn and returns the exception of exc_type it must raise."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError(f"{fn.__name__} did not raise {exc_type.__name__}")


def raw(client, method, path, token=None, **kwargs):
    """A raw HTTP call, for what hvac does not wrap (status codes, PATCH)."""
    headers = kwargs.pop("headers", {})
    headers["X-Vault-Token"] = token if token is not None else client.token
    return requests.request(method, f"{client.url}/v1/{path}", headers=headers, timeout=10, **kwargs)


def raw_exact(client, method, path, body):
    """Sends the path byte for byte (requests would resolve `..` itself)."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlparse(client.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request(method, f"/v1/{path}", body=json.dumps(body),
                 headers={"X-Vault-Token": client.token, "Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read().decode()


def init(url):
    client = hvac.Client(url=url)
    out = client.sys.initialize(secret_shares=1, secret_threshold=1)
    client.sys.submit_unseal_key(out["keys"][0])
    client.token = out["root_token"]
    assert client.is_authenticated()
    return client


def mounts(client):
    client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    client.sys.enable_secrets_engine("kv", path="kv1", description="version one")
    listed = client.sys.list_mounted_secrets_engines()
    data = listed["data"]
    for path in ("sys/", "cubbyhole/", "secret/", "kv1/"):
        assert path in data, (path, data.keys())
        # Legacy endpoints copy data to the top level too.
        assert path in listed, path
    m = data["secret/"]
    for field in ("accessor", "config", "local", "seal_wrap", "external_entropy_access",
                  "uuid", "options", "type", "description"):
        assert field in m, (field, m)
    assert m["type"] == "kv" and m["options"]["version"] == "2", m
    assert set(m["config"]) >= {"default_lease_ttl", "max_lease_ttl", "force_no_cache"}
    assert data["kv1/"]["description"] == "version one"

    # Overlapping and reserved paths are refused.
    expect(exc.InvalidRequest, client.sys.enable_secrets_engine, "kv", path="secret/sub")
    expect(exc.InvalidRequest, client.sys.enable_secrets_engine, "kv", path="sys/x")
    expect(exc.InvalidRequest, client.sys.enable_secrets_engine, "nonesuch", path="x")
    expect(exc.InvalidRequest, client.sys.disable_secrets_engine, "sys")

    # Tune and read back.
    client.sys.tune_mount_configuration("kv1", default_lease_ttl="1h", max_lease_ttl="2h",
                                        description="tuned")
    tuned = client.sys.read_mount_configuration("kv1")["data"]
    assert tuned["default_lease_ttl"] == 3600 and tuned["max_lease_ttl"] == 7200, tuned
    e = expect(exc.InvalidRequest, client.sys.tune_mount_configuration, "kv1",
               default_lease_ttl="banana")
    assert "default_lease_ttl" in str(e), e
    assert client.sys.read_mount_configuration("kv1")["data"]["default_lease_ttl"] == 3600

    # Move keeps the data (it lives under the mount's UUID).
    client.secrets.kv.v1.create_or_update_secret("moved", {"a": "1"}, mount_point="kv1")
    client.sys.move_backend("kv1", "kv-one")
    assert client.secrets.kv.v1.read_secret("moved", mount_point="kv-one")["data"] == {"a": "1"}
    expect(exc.InvalidPath, client.secrets.kv.v1.read_secret, "moved", mount_point="kv1")
    client.sys.move_backend("kv-one", "kv1")

    # A mount that is disabled loses its data.
    client.sys.enable_secrets_engine("kv", path="scratch")
    client.secrets.kv.v1.create_or_update_secret("x", {"v": "1"}, mount_point="scratch")
    client.sys.disable_secrets_engine("scratch")
    client.sys.enable_secrets_engine("kv", path="scratch")
    expect(exc.InvalidPath, client.secrets.kv.v1.read_secret, "x", mount_point="scratch")
    client.sys.disable_secrets_engine("scratch")

    # The UI mount lookup the Vault CLI uses to find a KV version.
    r = raw(client, "GET", "sys/internal/ui/mounts/secret/data/foo")
    assert r.status_code == 200 and r.json()["data"]["options"]["version"] == "2", r.text

    auths = client.sys.list_auth_methods()["data"]
    assert "token/" in auths and auths["token/"]["type"] == "token", auths
    expect(exc.InvalidRequest, client.sys.enable_auth_method, "nonesuch", path="nope")
    expect(exc.InvalidRequest, client.sys.disable_auth_method, "token")


def kv1(client):
    kv = client.secrets.kv.v1
    kv.create_or_update_secret("app/db", {"user": "u", "password": "kv1-secret-pw"},
                               mount_point="kv1")
    kv.create_or_update_secret("app/api", {"key": "k"}, mount_point="kv1")
    kv.create_or_update_secret("top", {"x": "y"}, mount_point="kv1")
    got = kv.read_secret("app/db", mount_point="kv1")
    assert got["data"] == {"user": "u", "password": "kv1-secret-pw"}, got
    for field in ("request_id", "lease_id", "renewable", "lease_duration", "data",
                  "wrap_info", "warnings", "auth", "mount_type"):
        assert field in got, field
    assert sorted(kv.list_secrets("", mount_point="kv1")["data"]["keys"]) == ["app/", "moved", "top"]
    assert sorted(kv.list_secrets("app", mount_point="kv1")["data"]["keys"]) == ["api", "db"]
    # LIST is GET ?list=true.
    r = raw(client, "GET", "kv1/app?list=true")
    assert sorted(r.json()["data"]["keys"]) == ["api", "db"], r.text
    kv.delete_secret("app/api", mount_point="kv1")
    expect(exc.InvalidPath, kv.read_secret, "app/api", mount_point="kv1")
    # hvac turns 404 on read/list into None.
    assert client.read("kv1/nothing") is None
    assert client.list("kv1/nothing/") is None
    # Empty writes answer 204 with no body; deleting the absent too.
    r = raw(client, "PUT", "kv1/empty-body", json={"a": "b"})
    assert r.status_code == 204 and r.text == "", (r.status_code, r.text)
    r = raw(client, "DELETE", "kv1/never-was")
    assert r.status_code == 204, r.status_code


def kv2(client):
    kv = client.secrets.kv.v2
    kv.configure(max_versions=5, cas_required=False, delete_version_after="0s",
                 mount_point="secret")
    cfg = kv.read_configuration(mount_point="secret")["data"]
    assert cfg["max_versions"] == 5 and cfg["cas_required"] is False, cfg

    v1 = kv.create_or_update_secret("app/cfg", {"password": "kv2-secret-pw", "n": 1},
                                    mount_point="secret")
    assert v1["data"]["version"] == 1, v1
    v2 = kv.create_or_update_secret("app/cfg", {"password": "kv2-secret-pw-2"}, cas=1,
                                    mount_point="secret")
    assert v2["data"]["version"] == 2
    e = expect(exc.InvalidRequest, kv.create_or_update_secret, "app/cfg", {"x": 1}, cas=1,
               mount_point="secret")
    assert "check-and-set parameter did not match the current version" in str(e), e
    # cas 0: create only.
    expect(exc.InvalidRequest, kv.create_or_update_secret, "app/cfg", {"x": 1}, cas=0,
           mount_point="secret")
    kv.create_or_update_secret("app/new", {"x": "1"}, cas=0, mount_point="secret")

    latest = kv.read_secret_version("app/cfg", mount_point="secret", raise_on_deleted_version=True)
    assert latest["data"]["data"] == {"password": "kv2-secret-pw-2"}
    meta = latest["data"]["metadata"]
    for field in ("created_time", "custom_metadata", "deletion_time", "destroyed", "version"):
        assert field in meta, field
    old = kv.read_secret_version("app/cfg", version=1, mount_point="secret",
                                 raise_on_deleted_version=True)
    assert old["data"]["data"]["n"] == 1

    # hvac's patch (read, then write with cas) and a real merge-patch.
    kv.patch("app/cfg", {"extra": "e"}, mount_point="secret")
    r = raw(client, "PATCH", "secret/data/app/cfg",
            headers={"Content-Type": "application/merge-patch+json"},
            data=json.dumps({"data": {"extra": None, "added": "a"}}))
    assert r.status_code == 200, r.text
    now = kv.read_secret_version("app/cfg", mount_point="secret", raise_on_deleted_version=True)
    assert now["data"]["data"] == {"password": "kv2-secret-pw-2", "added": "a"}, now
    assert now["data"]["metadata"]["version"] == 4

    # Soft delete: a 404 that still carries the body.
    kv.delete_latest_version_of_secret("app/cfg", mount_point="secret")
    r = raw(client, "GET", "secret/data/app/cfg")
    assert r.status_code == 404, r.status_code
    body = r.json()
    assert body["data"]["data"] is None and body["data"]["metadata"]["deletion_time"], body
    kv.undelete_secret_versions("app/cfg", [4], mount_point="secret")
    assert kv.read_secret_version("app/cfg", mount_point="secret",
                                  raise_on_deleted_version=True)["data"]["metadata"]["version"] == 4
    kv.delete_secret_versions("app/cfg", [1], mount_point="secret")
    kv.destroy_secret_versions("app/cfg", [2], mount_point="secret")
    md = kv.read_secret_metadata("app/cfg", mount_point="secret")["data"]
    assert md["current_version"] == 4 and md["versions"]["1"]["deletion_time"], md
    assert md["versions"]["2"]["destroyed"] is True, md
    r = raw(client, "GET", "secret/data/app/cfg?version=2")
    assert r.status_code == 404 and r.json()["data"]["metadata"]["destroyed"] is True, r.text

    kv.update_metadata("app/cfg", max_versions=3, custom_metadata={"owner": "team-a"},
                       mount_point="secret")
    md = kv.read_secret_metadata("app/cfg", mount_point="secret")["data"]
    assert md["max_versions"] == 3 and md["custom_metadata"] == {"owner": "team-a"}, md
    e = expect(exc.InvalidRequest, kv.update_metadata, "app/cfg", max_versions="banana",
               mount_point="secret")
    assert "max_versions" in str(e), e

    keys = kv.list_secrets("app", mount_point="secret")["data"]["keys"]
    assert sorted(keys) == ["cfg", "new"], keys
    r = raw(client, "GET", "secret/subkeys/app/cfg")
    assert r.status_code == 200 and r.json()["data"]["subkeys"] == {"password": None, "added": None}, r.text

    kv.delete_metadata_and_all_versions("app/new", mount_point="secret")
    expect(exc.InvalidPath, kv.read_secret_version, "app/new", mount_point="secret")

    # Bad input changes nothing.
    before = kv.read_secret_metadata("app/cfg", mount_point="secret")["data"]["current_version"]
    r = raw(client, "POST", "secret/data/app/cfg", json={"data": "not an object"})
    assert r.status_code == 400 and r.json()["errors"], r.text
    r = raw(client, "POST", "secret/data/app/cfg", data="{not json")
    assert r.status_code == 400, r.text
    for bad in ("secret/data/../../sys/mounts", "secret/data/a%2f..%2f..%2fb",
                "secret/data/%2e%2e/x", "secret/data/a//b", "secret/data/a%00b"):
        status, text = raw_exact(client, "POST", bad, {"data": {"x": "1"}})
        assert status in (400, 404), (bad, status, text)
    after = kv.read_secret_metadata("app/cfg", mount_point="secret")["data"]["current_version"]
    assert before == after


def policies(client):
    hcl = '''
    # readers
    path "secret/data/app/*" {
      capabilities = ["read", "list"]
    }
    path "secret/metadata/app/*" { capabilities = ["list"] }
    path "secret/data/app/locked" { capabilities = ["deny"] }
    path "kv1/app/+" { capabilities = ["read", "create", "update"] }
    '''
    client.sys.create_or_update_acl_policy("reader", hcl)
    got = client.sys.read_acl_policy("reader")["data"]
    assert set(got) == {"name", "policy"} and got["name"] == "reader", got
    assert "reader" in client.sys.list_acl_policies()["data"]["keys"]
    # Legacy endpoints.
    client.sys.create_or_update_policy("legacy", 'path "kv1/legacy" { policy = "write" }')
    assert "legacy" in client.sys.list_policies()["data"]["policies"]
    assert client.sys.read_policy("legacy")["data"]["rules"]

    e = expect(exc.InvalidRequest, client.sys.create_or_update_acl_policy, "bad",
               'path "x" {\n  capabilities = ["read", "frobnicate"]\n}')
    assert "frobnicate" in str(e), e
    e = expect(exc.InvalidRequest, client.sys.create_or_update_acl_policy, "bad",
               'path "x" {\n  capabilities = ["read"\n')
    assert "line" in str(e) and "column" in str(e), e
    expect(exc.InvalidPath, client.sys.read_acl_policy, "bad")
    expect(exc.InvalidRequest, client.sys.delete_acl_policy, "default")

    tok = client.auth.token.create(policies=["reader"], ttl="1h")["auth"]["client_token"]
    reader = hvac.Client(url=client.url, token=tok)
    client.secrets.kv.v2.create_or_update_secret("app/locked", {"k": "v"}, mount_point="secret")
    assert reader.secrets.kv.v2.read_secret_version(
        "app/cfg", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    expect(exc.Forbidden, reader.secrets.kv.v2.read_secret_version, "app/locked",
           mount_point="secret", raise_on_deleted_version=True)
    expect(exc.Forbidden, reader.secrets.kv.v2.create_or_update_secret, "app/cfg", {"x": "1"},
           mount_point="secret")
    r = raw(client, "GET", "sys/mounts", token=tok)
    assert r.status_code == 403 and r.json()["errors"] == ["permission denied"], r.text
    reader.secrets.kv.v1.create_or_update_secret("app/one", {"a": "1"}, mount_point="kv1")
    expect(exc.Forbidden, reader.secrets.kv.v1.create_or_update_secret, "app/one/two",
           {"a": "1"}, mount_point="kv1")

    caps = client.sys.get_capabilities(["secret/data/app/cfg"], token=tok)
    assert sorted(caps["capabilities"]) == ["list", "read"], caps
    caps = reader.sys.get_capabilities(["secret/data/app/locked", "sys/mounts"])
    assert caps["secret/data/app/locked"] == ["deny"] and caps["sys/mounts"] == ["deny"], caps
    acc = client.auth.token.lookup(tok)["data"]["accessor"]
    caps = client.sys.get_capabilities(["secret/data/app/x"], accessor=acc)
    assert sorted(caps["capabilities"]) == ["list", "read"], caps
    assert client.sys.get_capabilities(["anything"])["capabilities"] == ["root"]

    # A policy change applies to the next request.
    client.sys.create_or_update_acl_policy("reader", 'path "secret/data/app/*" { capabilities = ["deny"] }')
    expect(exc.Forbidden, reader.secrets.kv.v2.read_secret_version, "app/cfg",
           mount_point="secret", raise_on_deleted_version=True)
    client.sys.delete_acl_policy("reader")
    expect(exc.InvalidPath, client.sys.read_acl_policy, "reader")


def tokens(client):
    t = client.auth.token
    client.sys.create_or_update_acl_policy(
        "tokmaker", 'path "auth/token/create" { capabilities = ["update"] }')
    created = t.create(policies=["tokmaker"], ttl="30m", meta={"team": "a"},
                       display_name="ci")["auth"]
    for field in ("client_token", "accessor", "policies", "token_policies", "metadata",
                  "lease_duration", "renewable", "entity_id", "token_type", "orphan"):
        assert field in created, field
    assert created["lease_duration"] == 1800 and created["renewable"] is True, created
    assert created["orphan"] is False
    child = hvac.Client(url=client.url, token=created["client_token"])
    me = child.auth.token.lookup_self()["data"]
    assert me["display_name"] == "token-ci" and me["meta"] == {"team": "a"}, me
    assert me["policies"] == ["default", "tokmaker"] and me["ttl"] <= 1800, me
    by_acc = t.lookup_accessor(created["accessor"])["data"]
    assert by_acc["id"] == "" and by_acc["accessor"] == created["accessor"], by_acc
    assert t.lookup(created["client_token"])["data"]["id"] == created["client_token"]

    renewed = t.renew(created["client_token"], increment="1h")["auth"]
    assert renewed["lease_duration"] == 3600, renewed
    assert child.auth.token.renew_self(increment=600)["auth"]["lease_duration"] == 600
    assert t.renew_accessor(created["accessor"], increment=900)["auth"]["lease_duration"] == 900

    # A grandchild dies with its parent; an orphan does not.
    grand = child.auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"]
    orphan = t.create_orphan(policies=["default"], ttl="10m")["auth"]
    assert orphan["orphan"] is True
    t.revoke(created["client_token"])
    expect(exc.Forbidden, t.lookup, grand)
    assert t.lookup(orphan["client_token"])["data"]["orphan"] is True

    # revoke-orphan keeps children alive, now orphaned.
    parent = t.create(policies=["default"], ttl="10m")["auth"]["client_token"]
    parent = t.create(policies=["tokmaker"], ttl="10m")["auth"]["client_token"]
    kid = hvac.Client(url=client.url, token=parent).auth.token.create(
        policies=["default"], ttl="10m")["auth"]["client_token"]
    t.revoke_and_orphan_children(parent)
    assert t.lookup(kid)["data"]["orphan"] is True
    t.revoke_accessor(orphan["accessor"])
    expect(exc.Forbidden, t.lookup, orphan["client_token"])

    # A child cannot have policies its parent lacks.
    client.sys.create_or_update_acl_policy("p1", 'path "kv1/p1" { capabilities = ["read"] }')
    p1 = hvac.Client(url=client.url, token=t.create(policies=["p1"])["auth"]["client_token"])
    client.sys.create_or_update_acl_policy(
        "creator", 'path "auth/token/create*" { capabilities = ["create", "update"] }')
    creator = hvac.Client(url=client.url,
                          token=t.create(policies=["creator", "p1"])["auth"]["client_token"])
    e = expect(exc.InvalidRequest, creator.auth.token.create, policies=["root"])
    assert "subset" in str(e), e
    creator.auth.token.create(policies=["p1"])
    expect(exc.Forbidden, p1.auth.token.create, policies=["p1"])

    # num_uses: exhausted tokens are rejected.
    once = t.create(policies=["default"], num_uses=2)["auth"]["client_token"]
    limited = hvac.Client(url=client.url, token=once)
    limited.auth.token.lookup_self()
    limited.auth.token.lookup_self()
    expect(exc.Forbidden, limited.auth.token.lookup_self)

    # Roles.
    t.create_or_update_role("ci", allowed_policies=["p1"], orphan=True, token_period="1h")
    role = t.read_role("ci")["data"]
    assert role["allowed_policies"] == ["p1"] and role["orphan"] is True, role
    assert "ci" in t.list_roles()["data"]["keys"]
    by_role = t.create(role_name="ci", policies=["p1"])["auth"]
    assert by_role["orphan"] is True and "p1" in by_role["policies"], by_role
    assert by_role["lease_duration"] == 3600, by_role
    e = expect(exc.InvalidRequest, t.create, role_name="ci", policies=["creator"])
    assert "role" in str(e), e
    t.delete_role("ci")
    expect(exc.InvalidPath, t.read_role, "ci")

    # Tidy and the accessor list (sudo).
    assert "Tidy operation finished" in t.tidy()["warnings"][0]
    assert created["accessor"] not in t.list_accessors()["data"]["keys"]

    # Bad or revoked tokens: 403, never 500.
    for bad in ("hvs.nonsense", "", "x" * 300):
        r = raw(client, "GET", "auth/token/lookup-self", token=bad)
        assert r.status_code == 403, (bad, r.status_code)
    r = requests.get(f"{client.url}/v1/auth/token/lookup-self",
                     headers={"Authorization": f"Bearer {client.token}"}, timeout=10)
    assert r.status_code == 200, r.text
    e = expect(exc.InvalidRequest, t.create, ttl="banana")
    assert "ttl" in str(e), e
    e = expect(exc.InvalidRequest, t.create, type="batch")
    assert "batch" in str(e), e

    self_tok = t.create(policies=["default"])["auth"]["client_token"]
    hvac.Client(url=client.url, token=self_tok).auth.token.revoke_self()
    expect(exc.Forbidden, t.lookup, self_tok)


def wrapping_and_cubbyhole(client):
    client.write("cubbyhole/mine", value="cubby-secret")
    assert client.read("cubbyhole/mine")["data"]["value"] == "cubby-secret"
    other = hvac.Client(url=client.url,
                        token=client.auth.token.create(policies=["default"])["auth"]["client_token"])
    assert other.read("cubbyhole/mine") is None
    other.write("cubbyhole/mine", value="theirs")
    assert client.read("cubbyhole/mine")["data"]["value"] == "cubby-secret"
    assert client.list("cubbyhole/")["data"]["keys"] == ["mine"]

    wrapped = client.sys.wrap(payload={"launch": "codes"}, ttl="2m")["wrap_info"]
    for field in ("token", "accessor", "ttl", "creation_time", "creation_path", "wrapped_accessor"):
        assert field in wrapped, field
    assert wrapped["ttl"] == 120 and wrapped["creation_path"] == "sys/wrapping/wrap", wrapped
    look = raw(client, "POST", "sys/wrapping/lookup", token="", json={"token": wrapped["token"]})
    assert look.status_code == 200 and look.json()["data"]["creation_ttl"] == 120, look.text
    unwrapped = hvac.Client(url=client.url).sys.unwrap(wrapped["token"])
    assert unwrapped["data"] == {"launch": "codes"}, unwrapped
    e = expect(exc.InvalidRequest, hvac.Client(url=client.url).sys.unwrap, wrapped["token"])
    assert "wrapping token" in str(e), e

    # Any response can be wrapped: a token creation, a KV read.
    w = client.auth.token.create(policies=["default"], wrap_ttl="60s")
    assert w["auth"] is None and w["wrap_info"]["wrapped_accessor"], w
    inner = client.sys.unwrap(w["wrap_info"]["token"])
    assert inner["auth"]["client_token"].startswith("hvs."), inner
    r = raw(client, "GET", "secret/data/app/cfg", headers={"X-Vault-Wrap-TTL": "5m"})
    info = r.json()["wrap_info"]
    assert r.json()["data"] is None and info["ttl"] == 300, r.text
    # The wrapping token reads its own cubbyhole once.
    holder = hvac.Client(url=client.url, token=info["token"])
    resp = holder.sys.unwrap()
    assert resp["data"]["data"]["password"] == "kv2-secret-pw-2", resp
    r = raw(client, "GET", "sys/wrapping/unwrap", token=info["token"])
    assert r.status_code in (400, 405), r.status_code

    # Rewrap: a fresh token, the old one dead.
    w = client.sys.wrap(payload={"a": "b"}, ttl="1m")["wrap_info"]["token"]
    r = raw(client, "POST", "sys/wrapping/rewrap", json={"token": w})
    new = r.json()["wrap_info"]["token"]
    assert new != w
    expect(exc.InvalidRequest, client.sys.unwrap, w)
    assert client.sys.unwrap(new)["data"] == {"a": "b"}
    r = raw(client, "GET", "secret/data/app/cfg", headers={"X-Vault-Wrap-TTL": "banana"})
    assert r.status_code == 400, r.text


def audit(client, audit_file):
    client.sys.enable_audit_device("file", options={"file_path": audit_file})
    devices = client.sys.list_enabled_audit_devices()["data"]
    assert devices["file/"]["type"] == "file", devices
    h = client.sys.calculate_hash("file", "some input")["data"]["hash"]
    assert h.startswith("hmac-sha256:"), h
    e = expect(exc.InvalidRequest, client.sys.enable_audit_device, "file",
               options={"file_path": "/nonexistent-dir/x/audit.log"}, path="bad")
    e = expect(exc.InvalidRequest, client.sys.enable_audit_device, "nonesuch", path="bad2")
    # Requests after enabling are recorded.
    client.secrets.kv.v2.create_or_update_secret("audited", {"password": "audited-secret-pw"},
                                                 mount_point="secret")
    client.secrets.kv.v2.read_secret_version("audited", mount_point="secret",
                                             raise_on_deleted_version=True)
    # Key operations go through the pipeline too: audited, and sudo-only.
    client.sys.rotate_encryption_key()
    assert client.sys.get_encryption_key_status()["data"]["term"] == 2
    reader = hvac.Client(url=client.url,
                         token=client.auth.token.create(policies=["default"])["auth"]["client_token"])
    expect(exc.Forbidden, reader.sys.rotate_encryption_key)
    expect(exc.Forbidden, reader.sys.seal)
    return h


def transit(client):
    """Vault's transit engine as hvac drives it: keys, encrypt/decrypt,
    batches, rotation, rewrap, data keys, and Vault's error answers."""
    import base64
    client.sys.enable_secrets_engine("transit", path="transit")
    t = client.secrets.transit
    t.create_key("orders", key_type="chacha20-poly1305")
    assert t.list_keys()["data"]["keys"] == ["orders"]
    key = t.read_key("orders")["data"]
    assert key["type"] == "chacha20-poly1305" and key["latest_version"] == 1, key
    assert key["exportable"] is False
    secret = base64.b64encode(b"transit-secret-card").decode()
    ct = t.encrypt_data("orders", plaintext=secret)["data"]["ciphertext"]
    assert ct.startswith("vault:v1:"), ct
    assert t.decrypt_data("orders", ciphertext=ct)["data"]["plaintext"] == secret
    # First use of an unknown key creates it (aes256-gcm96 by default).
    t.encrypt_data("auto", plaintext=secret)
    assert t.read_key("auto")["data"]["type"] == "aes256-gcm96"
    batch = t.encrypt_data("orders", batch_input=[
        {"plaintext": secret, "reference": "a"},
        {"plaintext": base64.b64encode(b"two").decode(), "reference": "b"},
    ])["data"]["batch_results"]
    assert [r["reference"] for r in batch] == ["a", "b"], batch
    t.rotate_key("orders")
    rewrapped = t.rewrap_data("orders", ciphertext=ct)["data"]
    assert rewrapped["ciphertext"].startswith("vault:v2:") and rewrapped["key_version"] == 2
    assert t.decrypt_data("orders", ciphertext=rewrapped["ciphertext"])["data"]["plaintext"] == secret
    t.update_key_configuration("orders", min_decryption_version=2)
    e = expect(exc.InvalidRequest, t.decrypt_data, "orders", ciphertext=ct)
    assert "too old" in str(e), e
    e = expect(exc.InvalidRequest, t.decrypt_data, "orders", ciphertext="nonsense")
    assert "invalid ciphertext: no prefix" in str(e), e
    e = expect(exc.InvalidRequest, t.decrypt_data, "nokey", ciphertext=ct)
    assert "encryption key not found" in str(e), e
    dk = t.generate_data_key("orders", key_type="plaintext", bits=256)["data"]
    assert len(base64.b64decode(dk["plaintext"])) == 32
    assert t.decrypt_data("orders", ciphertext=dk["ciphertext"])["data"]["plaintext"] == dk["plaintext"]
    e = expect(exc.InvalidRequest, t.delete_key, "orders")
    assert "deletion is not allowed" in str(e), e
    t.update_key_configuration("orders", deletion_allowed=True)
    t.delete_key("orders")
    expect(exc.InvalidPath, t.read_key, "orders")
    return secret


def metrics(client):
    r = raw(client, "GET", "sys/metrics?format=prometheus")
    assert r.status_code == 200 and "sigil_request_duration_seconds_bucket" in r.text, r.text[:500]
    r = raw(client, "GET", "sys/metrics")
    assert r.status_code == 200 and "Samples" in r.json()["data"], r.text[:500]


def main():
    url, audit_file = sys.argv[1], sys.argv[2]
    client = init(url)
    mounts(client)
    kv1(client)
    kv2(client)
    policies(client)
    tokens(client)
    wrapping_and_cubbyhole(client)
    audit(client, audit_file)
    transit_secret = transit(client)
    metrics(client)
    print(json.dumps({
        "ok": True,
        "root_token": client.token,
        "secrets": ["kv1-secret-pw", "kv2-secret-pw-2", "audited-secret-pw", "cubby-secret",
                    transit_secret],
    }))


if __name__ == "__main__":
    main()
