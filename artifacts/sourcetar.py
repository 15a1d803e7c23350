"""The source model travels as a tarball: created deterministically (same directory → same
digest → build-cache hits), validated before anything is queued, extracted safely.

Refused: absolute paths, ``..``, symlinks, hard links, devices and other non-regular members,
archives that are not a Hugging Face model directory.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path, PurePosixPath

from artifacts.errors import InputError

SKIP_DIRS = {".git", "onnx", "openvino", "__pycache__"}
MAX_MEMBERS = 10_000


class UnsafeArchiveError(InputError):
    """The tarball could write outside its directory or holds non-regular files."""


class NotAModelError(InputError):
    """The tarball is not a Hugging Face model directory."""


def create(model_dir: Path, dest: Path) -> Path:
    """A reproducible tar of the model directory (sorted, mtime 0, no owners)."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise NotAModelError(f"{model_dir} has no config.json: not a Hugging Face model directory")
    files = []
    for path in sorted(model_dir.rglob("*")):
        rel = path.relative_to(model_dir)
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if path.is_symlink():
            raise UnsafeArchiveError(
                f"{path} is a symlink; copy the model into a plain directory first"
            )
        if path.is_file():
            files.append((rel.as_posix(), path))
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in files:
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return dest


def _check_member(m: tarfile.TarInfo) -> None:
    p = PurePosixPath(m.name)
    if p.is_absolute() or m.name.startswith("/") or ".." in p.parts or "\\" in m.name:
        raise UnsafeArchiveError(f"archive member {m.name!r} escapes the extraction directory")
    if m.issym() or m.islnk():
        raise UnsafeArchiveError(f"archive member {m.name!r} is a link; links are refused")
    if not (m.isfile() or m.isdir()):
        raise UnsafeArchiveError(f"archive member {m.name!r} is not a regular file or directory")


def validate(tar_path: Path | io.BufferedIOBase) -> list[str]:
    """Check every member header; return the file names. Raises on anything unsafe."""
    try:
        if isinstance(tar_path, Path | str):
            tar = tarfile.open(tar_path, "r:*")  # noqa: SIM115 - closed by the with below
        else:
            tar = tarfile.open(fileobj=tar_path, mode="r:*")  # noqa: SIM115
    except (tarfile.TarError, OSError) as exc:
        raise NotAModelError(f"source is not a readable tar archive: {exc}") from exc
    names = []
    with tar:
        for i, m in enumerate(tar):
            if i >= MAX_MEMBERS:
                raise UnsafeArchiveError(f"archive has more than {MAX_MEMBERS} members")
            _check_member(m)
            if m.isfile():
                names.append(m.name.removeprefix("./"))
    if "config.json" not in names:
        raise NotAModelError(
            "archive has no config.json at its root: not a Hugging Face model directory"
        )
    if not any(n in names for n in ("model.safetensors", "pytorch_model.bin")):
        raise NotAModelError(
            "archive has no model weights (model.safetensors or pytorch_model.bin)"
        )
    return names


def extract(tar_path: Path, dest: Path) -> Path:
    """Validate, then extract into ``dest`` (which must not exist)."""
    validate(Path(tar_path))
    dest = Path(dest)
    dest.mkdir(parents=True)
    with tarfile.open(tar_path, "r:*") as tar:
        tar.extractall(dest, filter="data")
    return dest
