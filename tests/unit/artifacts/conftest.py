"""Keys shared by the contract's unit tests: a fresh signing key and a trust store holding it."""

from __future__ import annotations

import pytest

from artifacts.signing import SigningKey, TrustedKeys


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def trusted(key) -> TrustedKeys:
    return TrustedKeys.of(key.public_pem())
