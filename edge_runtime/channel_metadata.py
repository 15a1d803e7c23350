"""What a channel points at, as the registry's TUF metadata says — checked by ``tuf.ngclient``.

The node starts from the root it was given (``[registry] tuf_root``) and updates through
root → timestamp → snapshot → targets → models → model-<name>, so it refuses metadata older
than what it has seen (rollback), a timestamp past its expiry (freeze: it keeps serving what it
has and reports ``stale-metadata``), and files whose hashes the signed metadata does not list
(mix-and-match). Key rotation arrives as new root versions, each signed by the old root keys.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from artifacts.client import central_urls
from artifacts.errors import RegistryError, RegistryUnavailableError
from artifacts.names import check_name

MAX_POINTER_BYTES = 64 << 10


class StaleMetadata(RegistryError):
    """The registry's signed metadata expired: the node may be looking at a frozen registry."""


class MetadataRefused(RegistryError):
    """The registry's metadata does not verify (rollback, bad signature, unlisted file …)."""


@dataclass(frozen=True)
class Pointer:
    model: str
    channel: str
    version: int
    bundles: dict[str, str]  # target -> manifest digest
    halted: bool


class _HttpxFetcher(FetcherInterface):
    """ngclient's downloads over httpx, with the node's pull token."""

    def __init__(self, token: str | None, timeout_s: float) -> None:
        headers = {"Accept-Encoding": "identity"}  # see artifacts.client.refuse_encoded
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(headers=headers, timeout=timeout_s)

    def _fetch(self, url: str) -> Iterator[bytes]:
        # Streamed chunk by chunk, so ngclient's length limit stops an endless answer early.
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise tuf_errors.DownloadHTTPError(
                        f"{url}: HTTP {response.status_code}", response.status_code
                    )
                encoding = response.headers.get("content-encoding", "identity").lower()
                if encoding not in ("", "identity"):
                    raise tuf_errors.DownloadError(f"{url}: {encoding}-encoded answer refused")
                yield from response.iter_raw(64 * 1024)
        except httpx.HTTPError as exc:
            raise tuf_errors.DownloadError(f"{url}: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._http.close()


class ChannelMetadata:
    def __init__(
        self, url: str, token: str | None, root_file: Path, cache_dir: Path, timeout_s: float = 30.0
    ) -> None:
        self.bases = [u + "/v1/tuf/" for u in central_urls(url)]  # replicas, tried in order
        self.token = token
        self.root_file = Path(root_file)
        self.dir = Path(cache_dir)
        (self.dir / "metadata").mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self.refreshed_at: float | None = None  # wall clock of the last verified refresh

    def _updater(self, fetcher: _HttpxFetcher, base: str) -> Updater:
        trusted = self.dir / "metadata" / "root.json"
        bootstrap = None if trusted.exists() else self.root_file.read_bytes()
        return Updater(
            metadata_dir=str(self.dir / "metadata"),
            metadata_base_url=base,
            target_base_url=base + "targets/",
            fetcher=fetcher,
            bootstrap=bootstrap,
        )

    def pointer(self, model: str, channel: str) -> Pointer:
        """The channel's verified pointer from the first replica that answers (each one's
        metadata is verified the same way: which replica answers changes nothing else)."""
        for base in self.bases[:-1]:
            try:
                return self._pointer(base, model, channel)
            except RegistryUnavailableError:
                continue
        return self._pointer(self.bases[-1], model, channel)

    def _pointer(self, base: str, model: str, channel: str) -> Pointer:
        """Refresh the metadata (a new Updater each time: ngclient refreshes once per Updater)
        and return the channel's verified pointer."""
        path = f"{check_name(model, 'model name')}/{check_name(channel, 'channel name')}.json"
        fetcher = _HttpxFetcher(self.token, self.timeout_s)
        try:
            updater = self._updater(fetcher, base)
            updater.refresh()
            self.refreshed_at = time.time()
            info = updater.get_targetinfo(path)
            if info is None:
                raise MetadataRefused(
                    f"the registry's signed metadata lists no channel {model}:{channel}"
                )
            if info.length > MAX_POINTER_BYTES:
                raise MetadataRefused(f"{path} is {info.length} bytes; a channel pointer is small")
            with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
                data = Path(
                    updater.download_target(info, str(Path(tmp) / "pointer.json"))
                ).read_bytes()
        except tuf_errors.ExpiredMetadataError as exc:
            raise StaleMetadata(f"stale-metadata: {exc}") from exc
        except tuf_errors.DownloadError as exc:
            raise RegistryUnavailableError(f"TUF metadata unreachable: {exc}") from exc
        except tuf_errors.RepositoryError as exc:
            raise MetadataRefused(
                f"the registry's TUF metadata was refused: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            fetcher.close()
        return _parse(data, model, channel)


def _parse(data: bytes, model: str, channel: str) -> Pointer:
    try:
        doc = json.loads(data)
        pointer = Pointer(
            model=doc["model"],
            channel=doc["channel"],
            version=int(doc["version"]),
            bundles={str(k): str(v) for k, v in doc["bundles"].items()},
            halted=bool(doc.get("halted", False)),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MetadataRefused(f"the channel pointer for {model}:{channel} is malformed") from exc
    if (pointer.model, pointer.channel) != (model, channel):
        raise MetadataRefused(
            f"the signed pointer for {model}:{channel} names {pointer.model}:{pointer.channel}"
        )
    return pointer
