"""A real OCI distribution registry on loopback for tests (Debian's ``docker-registry``).

Each instance runs its own ``docker-registry serve`` with filesystem storage in a given
directory, deletes enabled and no auth, so the OCI blob store is tested against the real
upload protocol, digest checks and Range handling rather than a mock.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx

from artifacts.cli.procs import free_port

BINARY = "docker-registry"


def registry_binary() -> str | None:
    """The registry executable's path, or None when it is not installed."""
    return shutil.which(BINARY)


class OciRegistry:
    """``docker-registry serve`` on ``127.0.0.1:<free port>``; restartable on the same port."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.storage = self.home / "storage"
        self.log_path = self.home / "registry.log"
        self.config_path = self.home / "config.yml"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        # JSON-style quoting keeps the YAML valid for any temp path.
        self.config_path.write_text(
            "version: 0.1\n"
            "log:\n"
            "  level: warn\n"
            "storage:\n"
            "  filesystem:\n"
            f'    rootdirectory: "{self.storage}"\n'
            "  delete:\n"
            "    enabled: true\n"
            "  maintenance:\n"
            "    uploadpurging:\n"
            "      enabled: false\n"
            "http:\n"
            f"  addr: 127.0.0.1:{self.port}\n"
            "  secret: shipyard-tests-only\n"  # upload sessions stay valid across a restart
            "health:\n"
            "  storagedriver:\n"
            "    enabled: false\n"
        )

    def uploads_in_progress(self) -> list[str]:
        """Upload sessions that still hold data (filesystem driver layout, any repository).

        Distribution 2.8 leaves an empty ``_uploads/<id>/hashstates`` behind even after a
        session is cancelled (its handler re-saves the hash state on close), so a session
        counts as live by its ``data`` file, which a cancel removes.
        """
        root = self.storage / "docker" / "registry" / "v2" / "repositories"
        return sorted(p.parent.name for p in root.glob("**/_uploads/*/data"))

    def uploads_settled(self, timeout: float = 5.0) -> list[str]:
        """The live upload sessions once none is left, or what is still there after
        ``timeout`` (the registry removes a cancelled session's data on its own schedule)."""
        deadline = time.monotonic() + timeout
        while (live := self.uploads_in_progress()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return live

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def start(self, timeout: float = 20.0) -> OciRegistry:
        """Start the registry and wait until ``GET /v2/`` answers 200."""
        binary = registry_binary()
        if binary is None:
            raise RuntimeError(f"{BINARY} is not installed")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [binary, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{BINARY} exited with {self.proc.returncode} during startup:\n"
                    f"{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{BINARY} did not answer within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate, wait, and kill if it does not go (never leaves a stray process)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> OciRegistry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
