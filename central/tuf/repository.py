"""Channel metadata as a TUF repository (python-tuf's metadata API, securesystemslib signers).

What edges fetch: for every ``model/channel`` a small *channel pointer* target file —
``{"model", "channel", "version", "bundles": {target: manifest digest}, "halted"}`` — listed in
signed TUF metadata. Roles and keys:

* ``root`` (offline key): which keys sign which role; rotating any key is a new root version.
* ``targets`` (offline key): delegates everything to the ``models`` role.
* ``models`` (online key, held by central): delegates ``<model>/*`` to one role per model.
* ``model-<name>`` (online ``models`` key): that model's channel pointers.
* ``snapshot`` and ``timestamp`` (online keys): consistency and freshness; the timestamp is
  re-signed well before it expires (``tuf_timestamp_expiry_s``), so a node that stops seeing
  fresh metadata knows it is being frozen.

Central never holds the offline keys in production: ``central tuf init --offline-keys DIR`` writes
them to DIR (keep it offline); without it, the first start creates them under
``HOME/tuf/offline`` and warns. Files are written atomically, roles before snapshot before
timestamp, so a reader never sees a timestamp naming metadata that is not there yet.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from artifacts import atomic
from artifacts.errors import NotFoundError, NotReady
from artifacts.names import check_name
from artifacts.signing import PRIVATE_KEY_FILE, SigningKey, generate_keypair, load_signing_key

log = logging.getLogger("shipyard.central.tuf")

OFFLINE_ROLES = ("root", "targets")
ONLINE_ROLES = ("snapshot", "timestamp", "models")
MODELS_ROLE = "models"
METADATA_FILE = re.compile(
    r"(?:[1-9][0-9]{0,8}\.)?(?:root|timestamp|snapshot|targets|models|model-[a-z0-9][a-z0-9._-]{0,63})\.json"
)
YEAR = dt.timedelta(days=365)
ONLINE_EXPIRY = dt.timedelta(days=30)


class TufKeysMismatch(NotReady):
    """This process's online keys are missing or not the ones the root lists (503: it cannot
    sign until it is given the deployment's keys)."""


def role_of(model: str) -> str:
    return f"model-{check_name(model, 'model name')}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class ChannelPointer:
    """What one channel points at, as TUF publishes it."""

    model: str
    channel: str
    version: int
    bundles: Mapping[str, str]  # target -> manifest digest
    halted: bool = False

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "model": self.model,
                "channel": self.channel,
                "version": self.version,
                "bundles": dict(sorted(self.bundles.items())),
                "halted": self.halted,
            },
            sort_keys=True,
        ).encode()


def _key(directory: Path, role: str) -> SigningKey:
    path = directory / role / PRIVATE_KEY_FILE
    if not path.exists():
        generate_keypair(directory / role)
    return load_signing_key(path)


class TufRepository:
    def __init__(
        self,
        root: Path,
        *,
        offline_keys: Path | None = None,
        online_keys: Path | None = None,
        timestamp_expiry_s: float = 86400.0,
    ) -> None:
        self.root = Path(root)
        self.metadata_dir = self.root / "metadata"
        self.targets_dir = self.root / "targets"
        self.online_dir = online_keys or self.root / "online"
        self.offline_dir = offline_keys or self.root / "offline"
        self.timestamp_expiry = dt.timedelta(seconds=timestamp_expiry_s)
        self._lock = asyncio.Lock()

    # ---- keys ----------------------------------------------------------------------------

    def _online(self, role: str) -> SigningKey:
        """An online key as held: never made up here (a key root does not list would sign
        metadata every edge refuses); only ``init`` and ``rotate`` create them."""
        path = self.online_dir / role / PRIVATE_KEY_FILE
        if not path.exists():
            raise TufKeysMismatch(
                f"the online {role} key is not in tuf_online_keys: every replica, and whoever "
                "runs `central tuf rotate`, needs the deployment's online keys"
            )
        return load_signing_key(path)

    def _offline(self, role: str) -> SigningKey:
        path = self.offline_dir / role / PRIVATE_KEY_FILE
        if not path.exists():
            raise NotFoundError(
                f"the offline {role} key is not at {path}: run this where the offline keys are "
                "(`central tuf init --offline-keys DIR` created them)"
            )
        return load_signing_key(path)

    def key_dir(self, role: str) -> Path:
        """Where ``role``'s key lives (offline roles: the offline directory)."""
        return (self.offline_dir if role in OFFLINE_ROLES else self.online_dir) / role

    def online_key_problem(
        self,
        root_md: Metadata | None = None,
        targets_md: Metadata | None = None,
        skip: tuple[str, ...] = (),
    ) -> str | None:
        """Why this process's online keys cannot sign for the repository's root (None: they
        can). Every replica must hold the same online keys; one that made its own would sign
        metadata every edge refuses."""
        root = (root_md or self._read("root")).signed
        models = (targets_md or self._read("targets")).signed.delegations
        wanted = {r: set(root.roles[r].keyids) for r in ("snapshot", "timestamp")}
        if models is not None and models.roles is not None and MODELS_ROLE in models.roles:
            wanted[MODELS_ROLE] = set(models.roles[MODELS_ROLE].keyids)
        for role, keyids in wanted.items():
            if role in skip:
                continue
            path = self.online_dir / role / PRIVATE_KEY_FILE
            if not path.exists():
                return f"the online {role} key is not at {path} (every replica needs the same keys)"
            if self._online(role).sslib_key().keyid not in keyids:
                return (
                    f"the online {role} key at {path} is not the one root lists: every replica "
                    "must hold the same online keys (tuf_online_keys)"
                )
        return None

    @staticmethod
    def _signer(key: SigningKey) -> CryptoSigner:
        return CryptoSigner(key.private_key, key.sslib_key())

    # ---- files ---------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.metadata_dir / name

    def _read(self, role: str) -> Metadata:
        return Metadata.from_file(str(self._path(f"{quote(role, '')}.json")))

    def _write(self, md: Metadata, role: str) -> None:
        data = md.to_bytes()
        if role == "root":
            atomic.write_bytes(self._path(f"{md.signed.version}.root.json"), data)
        atomic.write_bytes(self._path(f"{quote(role, '')}.json"), data)

    # ---- the working copy, as the database holds it (central.tuf.shared) -----------------

    def files(self) -> dict[str, bytes]:
        """Every metadata and target file, by its path under the repository."""
        out: dict[str, bytes] = {}
        for base in (self.metadata_dir, self.targets_dir):
            if base.is_dir():
                for f in sorted(base.rglob("*.json")):
                    out[f.relative_to(self.root).as_posix()] = f.read_bytes()
        return out

    def materialise(self, files: Mapping[str, bytes]) -> None:
        """Make the working copy exactly ``files`` (names checked: nothing lands outside)."""
        for name, body in files.items():
            path = self._file(name)
            if not path.is_file() or path.read_bytes() != body:
                atomic.write_bytes(path, body)
        for name in set(self.files()) - set(files):
            self._file(name).unlink(missing_ok=True)

    def _file(self, name: str) -> Path:
        parts = name.split("/")
        if len(parts) == 2 and parts[0] == "metadata" and METADATA_FILE.fullmatch(parts[1]):
            return self.metadata_dir / parts[1]
        if len(parts) == 3 and parts[0] == "targets" and parts[2].endswith(".json"):
            model = check_name(parts[1], "model name")
            channel = check_name(parts[2].removesuffix(".json"), "channel name")
            return self.targets_dir / model / f"{channel}.json"
        raise NotFoundError(f"no TUF file named {name!r}")

    def metadata(self, name: str) -> bytes:
        """A metadata file by its TUF file name (refused unless it is one this repo writes)."""
        if not METADATA_FILE.fullmatch(name):
            raise NotFoundError(f"no TUF metadata named {name!r}")
        path = self._path(name)
        if not path.is_file():
            raise NotFoundError(f"no TUF metadata named {name!r}")
        return path.read_bytes()

    def target(self, model: str, channel: str) -> bytes:
        path = (
            self.targets_dir
            / check_name(model, "model name")
            / f"{check_name(channel, 'channel name')}.json"
        )
        if not path.is_file():
            raise NotFoundError(f"no channel pointer for {model}:{channel}")
        return path.read_bytes()

    @property
    def initialised(self) -> bool:
        return self._path("root.json").exists()

    # ---- creating the repository --------------------------------------------------------

    def init(self) -> None:
        """Root, targets (offline keys), models, snapshot, timestamp (online keys), version 1."""
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        keys = {r: _key(self.offline_dir, r) for r in OFFLINE_ROLES}
        keys |= {r: _key(self.online_dir, r) for r in ONLINE_ROLES}
        root = Root(expires=_now() + YEAR, consistent_snapshot=False)
        for role in ("root", "targets", "snapshot", "timestamp"):
            root.add_key(keys[role].sslib_key(), role)
        md_root = Metadata(root)
        md_root.sign(self._signer(keys["root"]))
        models_key = keys[MODELS_ROLE].sslib_key()
        targets = Targets(
            expires=_now() + YEAR,
            delegations=Delegations(
                keys={models_key.keyid: models_key},
                roles={
                    MODELS_ROLE: DelegatedRole(
                        MODELS_ROLE, [models_key.keyid], 1, False, paths=["*/*"]
                    )
                },
            ),
        )
        md_targets = Metadata(targets)
        md_targets.sign(self._signer(keys["targets"]))
        md_models = Metadata(
            Targets(
                expires=_now() + ONLINE_EXPIRY,
                delegations=Delegations(keys={models_key.keyid: models_key}, roles={}),
            )
        )
        md_models.sign(self._signer(keys[MODELS_ROLE]))
        self._write(md_root, "root")
        self._write(md_targets, "targets")
        self._write(md_models, MODELS_ROLE)
        self._snapshot_and_timestamp(new=True)
        log.warning(
            "TUF repository created; its root and targets keys are in %s — keep them offline",
            self.offline_dir,
        )

    # ---- publishing ----------------------------------------------------------------------

    async def publish(self, pointer: ChannelPointer) -> None:
        """Write the channel pointer and re-sign what lists it (model role, snapshot, timestamp)."""
        async with self._lock:
            await asyncio.to_thread(self._publish, pointer)

    def _publish(self, pointer: ChannelPointer) -> None:
        self._publish_many([pointer])

    def _publish_many(self, pointers: list[ChannelPointer]) -> None:
        """Each pointer into its model's role; one snapshot and timestamp for them all."""
        changed = [p for p in pointers if self._sign_pointer(p)]
        if changed or not self._consistent():
            self._snapshot_and_timestamp()

    def _sign_pointer(self, pointer: ChannelPointer) -> bool:
        """Write the pointer and re-sign its model's role; False when already so."""
        data = pointer.to_bytes()
        path = f"{pointer.model}/{pointer.channel}.json"
        dest = self.targets_dir / pointer.model / f"{pointer.channel}.json"
        role = role_of(pointer.model)
        target = TargetFile.from_data(path, data)
        # Unchanged only when these bytes are on disk *and* the signed role lists them; a crash
        # anywhere in between is repaired by the next publish (publish_all runs at start).
        role_file = self._path(f"{quote(role, '')}.json")
        if (
            role_file.exists()
            and dest.exists()
            and dest.read_bytes() == data
            and self._read(role).signed.targets.get(path) == target
        ):
            return False
        atomic.write_bytes(dest, data)
        models_key = self._online(MODELS_ROLE)
        self._ensure_model_role(role, pointer.model, models_key)
        md = self._read(role)
        md.signed.targets[path] = target
        md.signed.version += 1
        md.signed.expires = _now() + ONLINE_EXPIRY
        md.sign(self._signer(models_key))
        self._write(md, role)
        return True

    def _ensure_model_role(self, role: str, model: str, key: SigningKey) -> None:
        """The model's role file first, then its delegation: a crash between the two leaves
        an unlisted file, never a delegation to a missing one."""
        if not self._path(f"{quote(role, '')}.json").exists():
            md = Metadata(Targets(expires=_now() + ONLINE_EXPIRY))
            md.sign(self._signer(key))
            self._write(md, role)
        models = self._read(MODELS_ROLE)
        delegations = models.signed.delegations
        assert delegations is not None and delegations.roles is not None
        if role in delegations.roles:
            return
        sslib = key.sslib_key()
        delegations.keys[sslib.keyid] = sslib
        delegations.roles[role] = DelegatedRole(role, [sslib.keyid], 1, True, paths=[f"{model}/*"])
        models.signed.version += 1
        models.signed.expires = _now() + ONLINE_EXPIRY
        models.sign(self._signer(key))
        self._write(models, MODELS_ROLE)

    def _consistent(self) -> bool:
        """The snapshot lists every targets role's current version; the timestamp, the snapshot."""
        snapshot = self._read("snapshot")
        for r in self._targets_roles():
            listed = snapshot.signed.meta.get(f"{quote(r, '')}.json")
            if listed is None or listed.version != self._read(r).signed.version:
                return False
        return self._read("timestamp").signed.snapshot_meta.version == snapshot.signed.version

    def _targets_roles(self) -> list[str]:
        models = self._read(MODELS_ROLE)
        roles = (models.signed.delegations.roles or {}) if models.signed.delegations else {}
        return ["targets", MODELS_ROLE, *sorted(roles)]

    def _snapshot_and_timestamp(self, *, new: bool = False) -> None:
        meta = {
            f"{quote(r, '')}.json": MetaFile(version=self._read(r).signed.version)
            for r in self._targets_roles()
        }
        if new:
            snapshot = Metadata(Snapshot(expires=_now() + ONLINE_EXPIRY, meta=meta))
        else:
            snapshot = self._read("snapshot")
            snapshot.signed.meta = meta
            snapshot.signed.version += 1
            snapshot.signed.expires = _now() + ONLINE_EXPIRY
        snapshot.sign(self._signer(self._online("snapshot")))
        self._write(snapshot, "snapshot")
        self._timestamp(snapshot.signed.version, new=new)

    def _timestamp(self, snapshot_version: int, *, new: bool = False) -> None:
        if new:
            ts = Metadata(Timestamp(expires=_now() + self.timestamp_expiry))
        else:
            ts = self._read("timestamp")
            ts.signed.version += 1
            ts.signed.expires = _now() + self.timestamp_expiry
        ts.signed.snapshot_meta = MetaFile(version=snapshot_version)
        ts.sign(self._signer(self._online("timestamp")))
        self._write(ts, "timestamp")

    async def refresh(self) -> None:
        """Keep the online roles fresh: a new timestamp now; snapshot and model roles when
        their expiry is less than a week away."""
        async with self._lock:
            await asyncio.to_thread(self._refresh)

    def _refresh(self) -> None:
        soon = _now() + dt.timedelta(days=7)
        stale = [r for r in self._targets_roles()[1:] if self._read(r).signed.expires < soon]
        for role in stale:
            md = self._read(role)
            md.signed.version += 1
            md.signed.expires = _now() + ONLINE_EXPIRY
            md.sign(self._signer(self._online(MODELS_ROLE)))
            self._write(md, role)
        if stale or self._read("snapshot").signed.expires < soon:
            self._snapshot_and_timestamp()
        else:
            self._timestamp(self._read("snapshot").signed.version)

    # ---- key rotation (through root) -----------------------------------------------------

    def rotate(self, role: str) -> str:
        """Replace ``role``'s key: a new root version lists the new key (signed by the root key;
        a new root key signs alongside the old one), then what the role signs is re-signed.
        Needs the offline keys. Returns the new key id."""
        if role not in (*OFFLINE_ROLES, *ONLINE_ROLES):
            raise NotFoundError(
                f"no TUF role {role!r}; roles: {', '.join((*OFFLINE_ROLES, *ONLINE_ROLES))}"
            )
        old_root_key = self._offline("root")
        base = self.offline_dir if role in OFFLINE_ROLES else self.online_dir
        (base / role / PRIVATE_KEY_FILE).unlink(missing_ok=True)
        (base / role / "publisher.pub").unlink(missing_ok=True)
        new = _key(base, role)
        if role == MODELS_ROLE:
            self._rotate_models(new)
        else:
            root = self._read("root")
            for keyid in list(root.signed.roles[role].keyids):
                root.signed.revoke_key(keyid, role)
            root.signed.add_key(new.sslib_key(), role)
            root.signed.version += 1
            root.signed.expires = _now() + YEAR
            root.sign(self._signer(old_root_key))
            if role == "root":
                root.sign(self._signer(new), append=True)
            self._write(root, "root")
            if role == "targets":
                md = self._read("targets")
                md.signed.version += 1
                md.sign(self._signer(new))
                self._write(md, "targets")
        self._snapshot_and_timestamp()
        return new.key_id

    def _rotate_models(self, new: SigningKey) -> None:
        sslib = new.sslib_key()
        targets = self._read("targets")
        delegations = targets.signed.delegations
        assert delegations is not None and delegations.roles is not None
        delegations.keys = {sslib.keyid: sslib}
        delegations.roles[MODELS_ROLE].keyids = [sslib.keyid]
        targets.signed.version += 1
        targets.sign(self._signer(self._offline("targets")))
        self._write(targets, "targets")
        models = self._read(MODELS_ROLE)
        md_delegations = models.signed.delegations
        assert md_delegations is not None and md_delegations.roles is not None
        md_delegations.keys = {sslib.keyid: sslib}
        for r in md_delegations.roles.values():
            r.keyids = [sslib.keyid]
        for role in [MODELS_ROLE, *md_delegations.roles]:
            md = models if role == MODELS_ROLE else self._read(role)
            md.signed.version += 1
            md.signed.expires = _now() + ONLINE_EXPIRY
            md.sign(self._signer(new))
            self._write(md, role)

    def root_json(self) -> bytes:
        """The current root (what an edge node's ``tuf_root`` bootstraps from)."""
        return self.metadata("root.json")
