"""A verified bundle opened by a backend, with its tokenizer and post-processing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from artifacts.bundle import VerifiedBundle
from artifacts.golden import SmokeResult, read_golden, smoke_check
from artifacts.manifest import Manifest
from artifacts.textproc import Encoded, TextEncoder, collate
from edge_runtime.backends import Backend, BackendSettings, load_backend


@dataclass
class LoadedModel:
    bundle: VerifiedBundle
    backend: Backend
    encoder: TextEncoder
    load_ms: float
    smoke: SmokeResult | None = None
    inflight: int = 0  # batches running on this backend (drain before close)
    pinned: int = 0  # requests admitted under this model and not yet answered
    failed: bool = False  # failed at run time and replaced (its pinned requests move on)
    info: dict[str, str] = field(default_factory=dict)

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @cached_property
    def target(self) -> str:  # read several times per request: worked out once
        return self.manifest.bundle_key()

    @property
    def version(self) -> int:
        return self.manifest.model.version

    def run(self, batch: list[Encoded]) -> np.ndarray:
        feeds = collate(
            batch,
            self.backend.input_names,
            pad_id=self.manifest.tokenizer.pad_token_id,
            multiple_of=self.backend.seq_multiple,
            cap=self.manifest.io.max_seq_len,
        )
        return self.backend.infer(feeds)

    def warm_up(self) -> None:
        """Run the shapes it will serve (a single short query; a batch of mixed lengths)."""
        golden = read_golden(self.bundle.path / self.manifest.golden.file)
        encoded = self.encoder.encode(golden.items)
        shortest = min(encoded, key=len)
        for _ in range(3):
            self.run([shortest])
        self.run(sorted(encoded, key=len)[: min(len(encoded), 16)])
        prepare = getattr(self.backend, "prepare_shapes", None)
        if prepare is not None:
            prepare(self.manifest.io.max_seq_len)
        self.release_memory()  # the smoke check's long batch need not stay resident

    def release_memory(self) -> None:
        """Ask the engine to free what it keeps beyond the weights (optional in the Protocol)."""
        release = getattr(self.backend, "release_memory", None)
        if release is not None:
            release()

    def close(self) -> None:
        self.backend.close()


def open_model(bundle: VerifiedBundle, settings: BackendSettings) -> LoadedModel:
    t0 = time.perf_counter()
    backend = load_backend(bundle.path, bundle.manifest, settings)
    encoder = TextEncoder.for_bundle(Path(bundle.path), bundle.manifest)
    model = LoadedModel(
        bundle=bundle, backend=backend, encoder=encoder, load_ms=(time.perf_counter() - t0) * 1e3
    )
    model.info = backend.describe()
    return model


def check(model: LoadedModel) -> SmokeResult:
    model.smoke = smoke_check(
        model.bundle.path, model.manifest, model.backend.infer, model.backend.input_names
    )
    return model.smoke
