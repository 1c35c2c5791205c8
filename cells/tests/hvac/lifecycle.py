"""The Python Vault client hvac drives a running `sigil server` through the
seal lifecycle. Run by cells/tests/hvac_lifecycle.rs:

    python3 lifecycle.py shamir URL
    python3 lifecycle.py pkcs11 URL          # first start: init
    python3 lifecycle.py pkcs11-restarted URL ROOT_TOKEN RECOVERY_KEYS_JSON

Each step asserts; any failure exits non-zero with a traceback. On success
the last line of stdout is a JSON object the Rust side may read.
"""

import base64
import json
import secrets
import string
import sys

import hvac
import hvac.exceptions


def health_code(client, **kw):
    """The status code of GET sys/health. hvac's default JSON adapter hands
    back the decoded body, so ask through its raw adapter for the response;
    also check HEAD (no query) agrees when no override is given."""
    raw = hvac.Client(url=client.url, adapter=hvac.adapters.RawAdapter)
    resp = raw.sys.read_health_status(method="GET", **kw)
    code = resp.status_code
    assert resp.headers["Content-Type"] == "application/json", resp.headers
    body = resp.json()
    for field in ("initialized", "sealed", "standby", "performance_standby",
                  "replication_performance_mode", "replication_dr_mode",
                  "server_time_utc", "version", "cluster_name", "cluster_id"):
        assert field in body, (field, body)
    if not kw:
        head = raw.sys.read_health_status(method="HEAD")
        assert head.status_code == code and not head.text, (head.status_code, code)
    return code


def xor_decode(encoded, otp):
    raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    assert len(raw) == len(otp), (len(raw), len(otp))
    return bytes(a ^ b for a, b in zip(raw, otp.encode())).decode()


def new_otp():
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(28))


def generate_root(client, keys):
    otp = new_otp()
    started = client.sys.start_root_token_generation(otp=otp)
    assert started["started"] and started["otp_length"] == 28, started
    nonce = started["nonce"]
    result = None
    for key in keys:
        result = client.sys.generate_root(key=key, nonce=nonce)
    assert result["complete"], result
    token = xor_decode(result["encoded_token"], otp)
    assert token.startswith("hvs.") and len(token) == 28, token
    return token


def check_rotate_and_key_status(client):
    before = client.sys.get_encryption_key_status()["data"]["term"]
    client.sys.rotate_encryption_key()
    after = client.sys.get_encryption_key_status()
    assert after["data"]["term"] == before + 1, (before, after)
    assert after["term"] == before + 1, "legacy top-level copy"
    return after["data"]["term"]


def shamir(url):
    client = hvac.Client(url=url)
    # Uninitialised: 501 and is_initialized() False.
    assert health_code(client) == 501
    assert not client.sys.is_initialized()

    # Bad input is refused with InvalidRequest (400) and changes nothing.
    try:
        client.sys.initialize(secret_shares=3, secret_threshold=5)
        raise AssertionError("threshold > shares accepted")
    except hvac.exceptions.InvalidRequest:
        pass
    assert not client.sys.is_initialized()

    init = client.sys.initialize(secret_shares=5, secret_threshold=3)
    keys, root = init["keys"], init["root_token"]
    assert len(keys) == 5 and len(init["keys_base64"]) == 5
    assert client.sys.is_initialized()
    try:
        client.sys.initialize(secret_shares=5, secret_threshold=3)
        raise AssertionError("second init accepted")
    except hvac.exceptions.InvalidRequest:
        pass

    # Sealed: 503 (hvac maps it to VaultDown for non-health calls).
    assert health_code(client) == 503
    status = client.sys.read_seal_status()
    assert status["sealed"] and status["t"] == 3 and status["n"] == 5 and status["progress"] == 0
    assert status["type"] == "shamir"
    assert health_code(client, sealed_code=299) == 299

    # Unseal with three keys, one at a time, checking progress.
    for i, key in enumerate(keys[:3], start=1):
        st = client.sys.submit_unseal_key(key)
        assert st["progress"] == (i % 3) and st["sealed"] == (i < 3), st
    assert not client.sys.is_sealed()
    assert health_code(client) == 200

    # Privileged calls need the token.
    try:
        client.sys.seal()
        raise AssertionError("seal without a token accepted")
    except hvac.exceptions.Forbidden:
        pass
    client.token = root

    term = check_rotate_and_key_status(client)

    # Rekey to 4 shares / threshold 2 with three of the current keys.
    rk = client.sys.start_rekey(secret_shares=4, secret_threshold=2)
    assert rk["started"] and rk["required"] == 3, rk
    nonce = rk["nonce"]
    progress = client.sys.read_rekey_progress()
    assert progress["nonce"] == nonce and progress["started"]
    result = None
    for key in keys[2:5]:
        result = client.sys.rekey(key=key, nonce=nonce)
    assert result["complete"] and len(result["keys"]) == 4, result
    new_keys = result["keys"]

    # Seal; the old keys no longer unseal, the new ones do.
    client.sys.seal()
    assert client.sys.is_sealed()
    assert health_code(client) == 503
    client.sys.submit_unseal_key(keys[0])
    try:
        client.sys.submit_unseal_key(keys[1])
        raise AssertionError("old shares still unseal after rekey")
    except hvac.exceptions.InvalidRequest:
        pass
    assert client.sys.is_sealed()
    client.sys.submit_unseal_keys(new_keys[1:3])
    assert not client.sys.is_sealed()
    assert client.sys.get_encryption_key_status()["data"]["term"] == term

    # generate-root with the new keys; the new token works.
    new_root = generate_root(client, new_keys[:2])
    client.token = new_root
    assert client.sys.get_encryption_key_status()["data"]["term"] == term
    # A bogus token is refused.
    client.token = "hvs." + "x" * 24
    try:
        client.sys.get_encryption_key_status()
        raise AssertionError("bogus token accepted")
    except hvac.exceptions.Forbidden:
        pass
    print(json.dumps({"ok": True, "term": term}))


def pkcs11_first(url):
    client = hvac.Client(url=url)
    assert health_code(client) == 501
    status = client.sys.read_seal_status()
    assert status["type"] == "pkcs11" and status["recovery_seal"], status
    init = client.sys.initialize(recovery_shares=5, recovery_threshold=3)
    assert init["keys"] == [] and len(init["recovery_keys"]) == 5, init
    # An HSM seal unseals itself at init.
    assert not client.sys.is_sealed()
    assert health_code(client) == 200
    client.token = init["root_token"]
    check_rotate_and_key_status(client)
    # Recovery keys authorise a recovery-key rekey and generate-root.
    rk = client.sys.start_rekey(secret_shares=3, secret_threshold=2, recovery_key=True)
    result = None
    for key in init["recovery_keys"][:3]:
        result = client.sys.rekey(key=key, nonce=rk["nonce"], recovery_key=True)
    assert result["complete"] and len(result["keys"]) == 3, result
    recovery = result["keys"]
    token = generate_root(client, recovery[:2])
    client.token = token
    st = client.sys.get_encryption_key_status()
    print(json.dumps({"ok": True, "root_token": token, "recovery_keys": recovery, "term": st["data"]["term"]}))


def pkcs11_restarted(url, token, recovery_json):
    client = hvac.Client(url=url, token=token)
    # No operator action: the node unsealed itself through the HSM.
    assert not client.sys.is_sealed()
    assert health_code(client) == 200
    term = client.sys.get_encryption_key_status()["data"]["term"]
    # Seal with the root token, and the node stays sealed: unseal keys are
    # not accepted by an HSM seal.
    client.sys.seal()
    assert client.sys.is_sealed()
    try:
        client.sys.submit_unseal_key(json.loads(recovery_json)[0])
        raise AssertionError("an HSM-sealed node accepted a key share")
    except hvac.exceptions.InvalidRequest:
        pass
    print(json.dumps({"ok": True, "term": term}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "shamir":
        shamir(sys.argv[2])
    elif mode == "pkcs11":
        pkcs11_first(sys.argv[2])
    elif mode == "pkcs11-restarted":
        pkcs11_restarted(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode}")
