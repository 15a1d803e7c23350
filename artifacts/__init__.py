"""Shipyard's artifact contract: manifests, targets, digests, signatures, bundles, the client.

Light dependencies only (msgspec, httpx, cryptography, typer, rich): every other part of
Shipyard, including the torch-free edge runtime, imports this package.
"""

__version__ = "0.1.0"
