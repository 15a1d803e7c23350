"""The model versions embed jobs name, each opened from its verified bundle.

A job names a model, a version and the bundle target that embeds the catalog (the index is
locked to exactly that bundle). The bundle is resolved by version, downloaded and verified
against the node's trusted keys (as a serving model is), loaded and smoke-checked; a target
this node cannot run is an error the job reports (another worker may take it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from artifacts.bundle import verify_bundle
from artifacts.errors import ShipyardError
from artifacts.signing import TrustedKeys
from edge_runtime.backends import BackendSettings
from edge_runtime.loaded_model import LoadedModel, check, open_model
from edge_runtime.sync import Syncer

KEEP = 2  # versions held open at once (a run of vN+1 while vN's stragglers finish)


class BulkModelError(ShipyardError):
    """This node cannot embed with the bundle a job names."""


class BulkModels:
    def __init__(self, syncer: Syncer, trusted: TrustedKeys, settings: BackendSettings) -> None:
        self.syncer = syncer
        self.trusted = trusted
        self.settings = settings
        self._open: OrderedDict[tuple[str, int, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str, version: int, target: str) -> LoadedModel:
        """Blocking (download, load, smoke check): call in a thread."""
        key = (model, version, target)
        with self._lock:
            if key in self._open:
                self._open.move_to_end(key)
                return self._open[key]
            resolved = self.syncer.from_registry(model, "", version=version)
            path = resolved.bundles.get(target)
            if path is None:
                why = (
                    resolved.errors.get(target) or "not offered for, or not runnable on, this node"
                )
                raise BulkModelError(f"{model} v{version} {target}: {why}")
            loaded = open_model(verify_bundle(path, self.trusted), self.settings)
            if loaded.manifest.model.task != "embedding":
                loaded.close()
                raise BulkModelError(f"{model} is a {loaded.manifest.model.task} model")
            smoke = check(loaded)
            if not smoke.passed:
                loaded.close()
                raise BulkModelError(
                    f"{model} v{version} {target} failed its smoke check: {smoke.describe()}"
                )
            self._open[key] = loaded
            while len(self._open) > KEEP:
                self._open.popitem(last=False)  # freed once the last batch on it lets go
            return loaded

    def close(self) -> None:
        with self._lock:
            for m in self._open.values():
                m.close()
            self._open.clear()
