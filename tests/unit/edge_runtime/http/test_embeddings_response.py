"""The OpenAI embeddings body: base64 rows are each row's little-endian float32 bytes, float
rows the values — whatever dtype, byte order or memory layout the backend's output had."""

from __future__ import annotations

import base64

import msgspec
import numpy as np
import pytest

from edge_runtime.http.openai import embeddings_response
from edge_runtime.inference.results import Embeddings, Usage

VALUES = np.arange(12, dtype=np.float64).reshape(3, 4) / 7 - 0.5


@pytest.mark.parametrize(
    "vectors",
    [
        VALUES.astype(np.float32),  # what every backend gives
        VALUES.astype(">f4"),  # big-endian
        VALUES,  # float64
        np.asfortranarray(VALUES.astype(np.float32)),  # not C-contiguous
        np.repeat(VALUES.astype(np.float32), 2, axis=1)[:, ::2],  # a strided view
    ],
)
def test_both_encodings_carry_each_row(vectors):
    r = Embeddings("m", 3, "onnx-int8", Usage(prompt_tokens=9), vectors=vectors)
    want = VALUES.astype(np.float32)
    as_b64 = msgspec.json.decode(msgspec.json.encode(embeddings_response(r, "base64")))
    as_float = msgspec.json.decode(msgspec.json.encode(embeddings_response(r, "float")))
    for i, row in enumerate(want):
        b64 = as_b64["data"][i]
        assert b64["index"] == i and b64["object"] == "embedding"
        got = np.frombuffer(base64.b64decode(b64["embedding"]), dtype="<f4")
        assert got.tolist() == row.tolist()
        assert as_float["data"][i]["embedding"] == row.tolist()
    assert as_b64["usage"]["prompt_tokens"] == 9 and as_b64["model"] == "m"
