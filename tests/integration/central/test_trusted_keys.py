"""Publisher keys trusted and untrusted on a running central (API and CLI), on SQLite and
PostgreSQL: pushes follow at once, without a restart; every change is audited."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from artifacts.bundle import verify_bundle
from artifacts.cli.procs import python_cli
from artifacts.client import RegistryClient
from artifacts.errors import Unprocessable
from artifacts.signing import generate_keypair, load_signing_key
from tests.factories import synthetic_bundle


def push_signed_by(client: RegistryClient, key, tmp_path, tag: str) -> None:
    number = client.create_version("product-embedder")
    synthetic_bundle(tmp_path / tag, key, version=number, target="onnx-fp32")
    b = verify_bundle(tmp_path / tag, None)
    for entry in b.manifest.files:
        client.upload_blob(entry.sha256, b.file(entry.path))
    client.push_bundle(b)


def api(central, method: str, path: str, token: str | None = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or central.admin_token}"}
    return httpx.request(method, f"{central.url}{path}", headers=headers, timeout=10, **kw)


def test_trust_and_untrust_take_effect_at_once(central, tmp_path, publisher_keys):
    priv, pub, kid = generate_keypair(tmp_path / "new")
    newkey = load_signing_key(priv)
    with RegistryClient(central.url, central.admin_token) as c:
        with pytest.raises(Unprocessable):
            push_signed_by(c, newkey, tmp_path, "before")
        body = {"public_key": pub.read_text(), "name": "release-team"}
        r = api(central, "POST", "/v1/keys/trusted", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["key_id"] == kid and r.json()["source"] == "api"
        assert api(central, "POST", "/v1/keys/trusted", json=body).status_code == 200  # idempotent
        push_signed_by(c, newkey, tmp_path, "trusted")  # no restart
        listed = {k["key_id"]: k["source"] for k in api(central, "GET", "/v1/keys/trusted").json()}
        assert listed[kid] == "api" and "file" in listed.values()
        file_kid = next(k for k, src in listed.items() if src == "file")
        r = api(central, "DELETE", f"/v1/keys/trusted/{kid}")
        assert r.status_code == 200 and r.json()["removed_at"]
        with pytest.raises(Unprocessable):
            push_signed_by(c, newkey, tmp_path, "after")
        assert api(central, "DELETE", f"/v1/keys/trusted/{kid}").status_code == 404
        assert api(central, "DELETE", f"/v1/keys/trusted/{file_kid}").status_code == 409
        push_signed_by(c, load_signing_key(publisher_keys[0]), tmp_path, "file-key")  # unaffected
        # trusted again after an untrust
        assert api(central, "POST", "/v1/keys/trusted", json=body).status_code == 201
        events = [e for e in c.audit(limit=50) if e.action.startswith("key.")]
        assert [e.action for e in events].count("key.trust") == 2
        assert any(e.action == "key.untrust" and e.subject == kid for e in events)


def test_only_admins_and_only_public_keys(central, tmp_path):
    _priv, pub, _kid = generate_keypair(tmp_path / "k")
    body = {"public_key": pub.read_text(), "name": "x"}
    secret = (tmp_path / "k" / "publisher.key").read_text().splitlines()[1]
    push_token = central.token("push", "promote", name="pusher")
    assert api(central, "POST", "/v1/keys/trusted", push_token, json=body).status_code == 403
    assert api(central, "GET", "/v1/keys/trusted", push_token).status_code == 403
    assert httpx.get(f"{central.url}/v1/keys/trusted").status_code == 401
    for bad, status in [
        ({"public_key": "not a pem", "name": "x"}, 400),
        ({"public_key": (tmp_path / "k" / "publisher.key").read_text(), "name": "x"}, 400),
        ({"public_key": "A" * 10_000, "name": "x"}, 400),
        ({"public_key": pub.read_text(), "name": "bad name!"}, 422),
        ({"public_key": pub.read_text()}, 400),
        ({"public_key": pub.read_text(), "name": "x", "extra": 1}, 400),
    ]:
        r = api(central, "POST", "/v1/keys/trusted", json=bad)
        assert r.status_code == status, (bad.keys(), r.status_code, r.text)
        assert secret not in r.text  # a private key sent by mistake is never echoed
    assert all(k["source"] == "file" for k in api(central, "GET", "/v1/keys/trusted").json())


def test_cli_trusts_a_running_service(central, tmp_path, database_url):
    priv, pub, kid = generate_keypair(tmp_path / "cli")
    db = ["--database-url", database_url] if database_url else []
    home = ["--home", str(central.cfg.home_path), *db]
    r = subprocess.run(
        python_cli("central.cli", "keys", "trust", str(pub), *home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert kid in r.stdout
    with RegistryClient(central.url, central.admin_token) as c:
        deadline = time.monotonic() + 10  # another process wrote it: within the cache window
        while True:
            try:
                push_signed_by(c, load_signing_key(priv), tmp_path, f"t{time.monotonic()}")
                break
            except Unprocessable:
                assert time.monotonic() < deadline, "the running service never trusted the key"
                time.sleep(0.5)
    listed = subprocess.run(
        python_cli("central.cli", "keys", "list", "--json", *home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert kid in listed.stdout
