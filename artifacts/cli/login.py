"""The CLI's saved login (``artifact login``): registry URL and token, file mode 0600.

Location: ``$SHIPYARD_CONFIG_DIR/cli.json`` (default ``~/.config/shipyard``). The environment
(``SHIPYARD_REGISTRY``, ``SHIPYARD_TOKEN``) overrides the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from artifacts import atomic
from artifacts.errors import InputError


class CliConfig(msgspec.Struct, kw_only=True):
    url: str = ""
    token: str = ""


def config_path() -> Path:
    base = os.environ.get("SHIPYARD_CONFIG_DIR") or os.path.expanduser("~/.config/shipyard")
    return Path(base) / "cli.json"


def load() -> CliConfig:
    path = config_path()
    cfg = CliConfig()
    if path.exists():
        try:
            cfg = msgspec.json.decode(path.read_bytes(), type=CliConfig)
        except msgspec.DecodeError as exc:
            raise InputError(f"{path} is corrupt ({exc}); run `artifact login` again") from exc
    cfg.url = os.environ.get("SHIPYARD_REGISTRY", cfg.url)
    cfg.token = os.environ.get("SHIPYARD_TOKEN", cfg.token)
    return cfg


def save(cfg: CliConfig) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, msgspec.json.format(msgspec.json.encode(cfg)), mode=0o600)
    return path


def require() -> CliConfig:
    cfg = load()
    if not cfg.url:
        raise InputError(
            "no registry configured: run `artifact login URL --token T` (or set SHIPYARD_REGISTRY)"
        )
    return cfg
