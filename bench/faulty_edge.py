"""``edge-runtime serve`` with faults switched on by files in ``$SHIPYARD_FAULTS_DIR`` (for the
fault-injection tests and the soak benchmark; never part of a deployment):

- ``enospc``: every write to a download (``*.part``) fails with ENOSPC once 64 KiB of it are
  written — a full disk, injected at the write call (a small tmpfs would need root or a mount
  namespace on the CI machine);
- ``backend-raises``: the backends named in the file (``target`` or ``model:target``) raise at
  run time.

    SHIPYARD_FAULTS_DIR=/tmp/faults python -m bench.faulty_edge --config edge.toml
"""

from __future__ import annotations

import builtins
import errno
import os
import sys
from pathlib import Path

FAULTS_ENV = "SHIPYARD_FAULTS_DIR"


def _install_faults(faults: Path) -> None:
    import artifacts.client
    import edge_runtime.loaded_model

    real_open = builtins.open

    class FullDisk:
        def __init__(self, fh) -> None:
            self._fh, self._n = fh, 0

        def write(self, data: bytes) -> int:
            if (faults / "enospc").exists() and self._n + len(data) > 64 << 10:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._n += len(data)
            return self._fh.write(data)

        def __getattr__(self, name: str):
            return getattr(self._fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self._fh.close()

    def faulty_open(file, mode="r", *args, **kw):
        fh = real_open(file, mode, *args, **kw)
        return FullDisk(fh) if str(file).endswith(".part") and "b" in mode else fh

    artifacts.client.open = faulty_open  # type: ignore[attr-defined]

    real_run = edge_runtime.loaded_model.LoadedModel.run

    def faulty_run(self, batch):
        flag = faults / "backend-raises"
        named = flag.read_text().split() if flag.exists() else []  # "target" or "model:target"
        if self.target in named or f"{self.manifest.model.name}:{self.target}" in named:
            raise RuntimeError(f"injected run-time failure of {self.target}")
        return real_run(self, batch)

    edge_runtime.loaded_model.LoadedModel.run = faulty_run  # type: ignore[method-assign]


def main() -> None:
    faults = os.environ.get(FAULTS_ENV)
    if faults:
        _install_faults(Path(faults))
    from edge_runtime.cli import app

    app(["serve", *sys.argv[1:]])


if __name__ == "__main__":
    main()
