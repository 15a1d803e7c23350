"""Bundle directories: write them atomically, read and verify them before anything trusts them.

A bundle is ``manifest.json`` + ``manifest.sig`` + exactly the files the manifest lists. Its
identity is the sha256 of ``manifest.json``'s bytes (which pin every file by digest).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import msgspec

from artifacts import atomic, oms
from artifacts.digests import sha256_bytes, sha256_file
from artifacts.errors import (
    BadSignatureError,
    BundleError,
    BundleExistsError,
    DigestMismatchError,
    MissingFileError,
    MissingSignatureError,
    SignatureError,
    SizeMismatchError,
    UnlistedFileError,
    UnsafePathError,
)
from artifacts.manifest import (
    LEGACY_SIGNATURE_FILE,
    MANIFEST_FILE,
    SIGNATURE_FILE,
    FileEntry,
    Manifest,
    decode,
    encode,
)
from artifacts.signing import SigningKey, TrustedKeys

_SAFE_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
RESERVED = frozenset({MANIFEST_FILE, SIGNATURE_FILE, LEGACY_SIGNATURE_FILE})


def check_relpath(path: object) -> str:
    """Return ``path`` if it is a safe bundle-relative POSIX path, else raise UnsafePathError."""
    if not isinstance(path, str) or not path:
        raise UnsafePathError(f"bundle file path {path!r} is empty or not a string")
    if "\\" in path or "\0" in path:
        raise UnsafePathError(f"bundle file path {path!r} contains a backslash or NUL")
    if path.startswith("/") or PurePosixPath(path).is_absolute():
        raise UnsafePathError(f"bundle file path {path!r} is absolute")
    parts = path.split("/")
    if len(parts) > 4:
        raise UnsafePathError(f"bundle file path {path!r} is nested too deep")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePathError(f"bundle file path {path!r} escapes or is not normalised")
        if not _SAFE_COMPONENT.fullmatch(part):
            raise UnsafePathError(f"bundle file path {path!r} has unsafe characters")
    if path in RESERVED:
        raise UnsafePathError(f"bundle file path {path!r} is reserved for the manifest")
    return path


@dataclass(frozen=True)
class VerifiedBundle:
    path: Path
    manifest: Manifest
    manifest_bytes: bytes
    key_id: str | None  # None when the signature was not checked

    @property
    def digest(self) -> str:
        return sha256_bytes(self.manifest_bytes)

    def file(self, relpath: str) -> Path:
        return self.path / check_relpath(relpath)

    @property
    def signature(self) -> str:
        """``model.sig`` (the OMS signature) as text ("" when the bundle is unsigned)."""
        sig = self.path / SIGNATURE_FILE
        return _read_regular(sig, SIGNATURE_FILE).decode() if os.path.lexists(sig) else ""


def write_bundle(
    dest: Path,
    manifest: Manifest,
    files: Mapping[str, Path | bytes],
    *,
    key: SigningKey | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Write a complete bundle at ``dest`` or nothing at all.

    ``files`` maps bundle-relative paths to a source file or to bytes. The manifest's ``files``
    and ``signing_key_id`` are filled in here, so the caller cannot get them wrong.
    """
    dest = Path(dest)
    if (dest.exists() or dest.is_symlink()) and not overwrite:
        raise BundleExistsError(
            f"{dest} already exists; pass overwrite (--overwrite) to replace it"
        )
    for relpath in files:
        check_relpath(relpath)
    with atomic.staged_dir(dest, overwrite=True) as tmp:
        entries: list[FileEntry] = []
        for relpath, source in sorted(files.items()):
            target = tmp / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes | bytearray):
                target.write_bytes(source)
            else:
                shutil.copyfile(source, target)
            entries.append(
                FileEntry(path=relpath, sha256=sha256_file(target), size=target.stat().st_size)
            )
        final = msgspec.structs.replace(
            manifest, files=entries, signing_key_id=key.key_id if key else None
        )
        check_named_files(final)
        (tmp / MANIFEST_FILE).write_bytes(encode(final))
        if key is not None:
            oms.sign_directory(tmp, key)
    return final


def restamp_bundle(
    src: Path,
    dest: Path,
    *,
    version: int,
    key: SigningKey,
    model: str | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Copy a bundle with ``model.version`` (and optionally the model name) set, re-signed by
    ``key`` (used by push: bundles built locally carry version 0)."""
    manifest = read_manifest(src)
    stamped = msgspec.structs.replace(
        manifest,
        model=msgspec.structs.replace(
            manifest.model, version=version, name=model or manifest.model.name
        ),
    )
    files = {entry.path: Path(src) / check_relpath(entry.path) for entry in manifest.files}
    return write_bundle(dest, stamped, files, key=key, overwrite=overwrite)


def _read_regular(path: Path, what: str) -> bytes:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise MissingFileError(f"{what} is missing: {path}") from None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(f"{what} is a symlink: {path}")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(f"{what} is not a regular file: {path}")
    return path.read_bytes()


def read_provenance(path: Path) -> dict | None:
    """The SLSA statement in ``provenance.json`` (its DSSE payload), unverified: for display.
    None when the bundle carries none (bundles pushed with ``artifact push``)."""
    import base64
    import json

    file = Path(path) / "provenance.json"
    if not file.is_file() or file.is_symlink():
        return None
    try:
        envelope = json.loads(file.read_bytes())
        statement = json.loads(base64.b64decode(envelope["payload"]))
        signers = [s.get("keyid") for s in envelope.get("signatures", [])]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"provenance.json is unreadable: {exc}") from exc
    return {"signed_by": signers, "statement": statement}


def read_manifest(path: Path) -> Manifest:
    """Decode a bundle's manifest without verifying anything else (for display)."""
    return decode(_read_regular(Path(path) / MANIFEST_FILE, MANIFEST_FILE))


def verify_bundle(
    path: Path, trusted: TrustedKeys | None, *, check_digests: bool = True
) -> VerifiedBundle:
    """Verify a bundle directory; raise the specific :class:`BundleError`/SignatureError.

    Order: the manifest's paths (syntax only), then the OMS signature (authenticate the file
    list before trusting it), then the file list against the directory (symlinks, special,
    missing and unlisted files), then sizes and digests. ``trusted=None`` checks integrity only and says so in ``key_id=None``.
    """
    path = Path(path)
    if path.is_symlink():
        raise UnsafePathError(f"bundle directory {path} is a symlink")
    if not path.is_dir():
        raise MissingFileError(f"no bundle directory at {path}")
    data = _read_regular(path / MANIFEST_FILE, MANIFEST_FILE)
    manifest = decode(data)
    listed = check_paths(manifest)  # paths are checked before anything trusts them
    key_id = _authenticate(path, data, manifest, trusted) if trusted is not None else None
    _check_tree(path, listed)
    _check_contents(path, listed, check_digests=check_digests)
    return VerifiedBundle(path=path, manifest=manifest, manifest_bytes=data, key_id=key_id)


def signed_files(manifest: Manifest, manifest_bytes: bytes) -> dict[str, str]:
    """What a bundle's OMS signature must sign: every listed file, and manifest.json itself."""
    return {
        MANIFEST_FILE: sha256_bytes(manifest_bytes),
        **{f.path: f.sha256 for f in manifest.files},
    }


def authenticate(
    manifest: Manifest, manifest_bytes: bytes, signature: bytes | None, trusted: TrustedKeys
) -> str:
    """The signer's key id, if ``signature`` (model.sig) is a trusted OMS signature over
    exactly this manifest and the files it lists; raises otherwise."""
    if not signature:
        raise MissingSignatureError(
            f"bundle is not signed (no {SIGNATURE_FILE}); sign it with `artifact build --key` "
            "or `artifact push --key`"
        )
    signed = oms.verify_signature(signature, trusted)
    oms.check_covers(signed, signed_files(manifest, manifest_bytes))
    if manifest.signing_key_id and manifest.signing_key_id != signed.key_id:
        raise BadSignatureError(
            f"manifest names signer {manifest.signing_key_id} but {signed.key_id} signed it"
        )
    return signed.key_id


def _authenticate(path: Path, data: bytes, manifest: Manifest, trusted: TrustedKeys) -> str:
    if os.path.lexists(path / LEGACY_SIGNATURE_FILE) and not os.path.lexists(path / SIGNATURE_FILE):
        raise SignatureError(
            f"{path} is signed in the pre-OMS format ({LEGACY_SIGNATURE_FILE}), which this "
            "Shipyard no longer accepts; rebuild it, or re-sign it with `artifact push --key`"
        )
    sig_path = path / SIGNATURE_FILE
    signature = _read_regular(sig_path, SIGNATURE_FILE) if os.path.lexists(sig_path) else None
    return authenticate(manifest, data, signature, trusted)


def check_named_files(manifest: Manifest) -> None:
    """``tokenizer.file`` and ``golden.file`` go through the same path checks as the file list
    (they become paths on the node; a verified bundle holds no file its manifest omits)."""
    check_relpath(manifest.tokenizer.file)
    check_relpath(manifest.golden.file)


def check_paths(manifest: Manifest) -> dict[str, FileEntry]:
    """Every path a manifest names (files, tokenizer, golden) is safe; the file list by path."""
    check_named_files(manifest)
    return _listed(manifest)


def _listed(manifest: Manifest) -> dict[str, FileEntry]:
    """The manifest's file list by path: every path safe, none listed twice."""
    listed: dict[str, FileEntry] = {}
    for entry in manifest.files:
        relpath = check_relpath(entry.path)
        if relpath in listed:
            raise BundleError(f"manifest lists {relpath!r} twice")
        listed[relpath] = entry
    return listed


def _check_tree(path: Path, listed: Mapping[str, FileEntry]) -> None:
    """No symlinks or special files anywhere below ``path``, nothing the manifest omits."""
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(path).as_posix()
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePathError(f"bundle contains a symlink: {rel}")
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePathError(f"bundle contains a special file: {rel}")
            if rel not in listed and rel not in RESERVED:
                raise UnlistedFileError(
                    f"bundle contains {rel!r}, which its manifest does not list "
                    "(added after the bundle was written?)"
                )


def _check_contents(path: Path, listed: Mapping[str, FileEntry], *, check_digests: bool) -> None:
    """Every listed file present with its size (and, unless skipped, its digest)."""
    for relpath, entry in listed.items():
        full = path / relpath
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            raise MissingFileError(
                f"bundle file {relpath!r} listed in the manifest is missing"
            ) from None
        if st.st_size != entry.size:
            raise SizeMismatchError(
                f"bundle file {relpath!r} is {st.st_size} bytes, manifest says {entry.size} "
                "(truncated or incomplete download?)"
            )
        if check_digests:
            actual = sha256_file(full)
            if actual != entry.sha256:
                raise DigestMismatchError(
                    f"bundle file {relpath!r} has digest {actual[:19]}…, manifest says "
                    f"{entry.sha256[:19]}… (corrupted or tampered)"
                )
