"""`central token create` / `keys trust` against a real SQLite home."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from artifacts.signing import generate_keypair, key_id_of, load_public_key
from central.audit.service import AuditLog
from central.auth.service import TokenService
from central.cli import main
from central.db import Database
from central.settings import CentralConfig


def _principal(home: Path, token: str):
    async def run():
        db = Database(CentralConfig(home=str(home)).db_url)
        try:
            return await TokenService(db, AuditLog(db)).authenticate(f"Bearer {token}")
        finally:
            await db.close()

    return asyncio.run(run())


def test_token_create_prints_a_working_scoped_token(tmp_path: Path, capsys) -> None:
    home = tmp_path / "central"
    assert (
        main(["token", "create", "--scope", "pull", "--name", "edge-eu", "--home", str(home)]) == 0
    )
    token = capsys.readouterr().out.strip()
    principal = _principal(home, token)
    assert principal.name == "edge-eu"
    assert "pull" in principal.scopes and "push" not in principal.scopes


def test_token_create_refuses_unknown_scope_and_writes_nothing(tmp_path: Path, capsys) -> None:
    home = tmp_path / "central"
    assert main(["token", "create", "--scope", "root", "--home", str(home)]) == 1
    assert "root" in capsys.readouterr().err
    assert main(["token", "create", "--scope", "pull", "--home", str(home)]) == 0
    token = capsys.readouterr().out.strip()
    with pytest.raises(Exception, match="invalid or revoked"):
        _principal(home, token + "x")


def test_token_create_binds_catalogs(tmp_path: Path, capsys) -> None:
    home = tmp_path / "central"
    argv = ["token", "create", "--scope", "embed", "--name", "embed-eu", "--home", str(home)]
    assert main([*argv, "--catalog", "shoes", "--catalog", "hats"]) == 0
    principal = _principal(home, capsys.readouterr().out.strip())
    assert principal.catalogs == frozenset({"shoes", "hats"})
    principal.require_catalog("hats")
    with pytest.raises(Exception, match="bound to catalog\\(s\\) hats, shoes, not 'bags'"):
        principal.require_catalog("bags")
    assert main([*argv, "--catalog", "a.b"]) == 1  # a catalog name has no dots
    assert "no dots" in capsys.readouterr().err
    assert main(["token", "list", "--home", str(home)]) == 0
    listed = capsys.readouterr().out
    assert "hats,shoes" in listed and listed.count("embed-eu") == 1


def test_keys_trust_list_untrust_in_the_database(tmp_path: Path, capsys) -> None:
    import json

    _, pub, kid = generate_keypair(tmp_path / "keys")
    home = tmp_path / "central"
    assert main(["keys", "trust", str(pub), "--home", str(home), "--name", "release"]) == 0
    assert kid == key_id_of(load_public_key(pub)) and kid in capsys.readouterr().out
    assert main(["keys", "trust", str(pub), "--home", str(home)]) == 0
    assert "already trusted" in capsys.readouterr().out
    assert main(["keys", "list", "--json", "--home", str(home)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(k["key_id"], k["name"], k["source"]) for k in listed] == [(kid, "release", "api")]
    assert not list(CentralConfig(home=str(home)).trusted_keys_path.glob("*.pub"))  # no file
    assert main(["keys", "untrust", kid, "--home", str(home)]) == 0
    assert main(["keys", "untrust", kid, "--home", str(home)]) == 1
    assert "no trusted key" in capsys.readouterr().err
    assert main(["keys", "trust", str(tmp_path / "nope.pub"), "--home", str(home)]) == 1
