"""An index from vectors embedded elsewhere (the catalog queue): the file is checked first."""

import numpy as np
import pytest

from artifacts.errors import InputError
from builder.index import load_vectors


def test_vectors_file_is_checked_and_normalised(tmp_path):
    f = tmp_path / "v.npy"
    np.save(f, np.array([[3.0, 4.0], [0.0, 2.0]], np.float32))
    assert np.allclose(load_vectors(f, 2, 2), [[0.6, 0.8], [0.0, 1.0]])
    for arr, match in (
        (np.ones((3, 2), np.float32), "needs"),
        (np.ones((2, 2), np.float64), "needs"),
        (np.array([[np.nan, 1.0], [1.0, 0.0]], np.float32), "non-finite"),
        (np.zeros((2, 2), np.float32), "zero vector"),
    ):
        np.save(f, arr)
        with pytest.raises(InputError, match=match):
            load_vectors(f, 2, 2)
    f.write_bytes(b"not numpy")
    with pytest.raises(InputError, match="not a float32 .npy"):
        load_vectors(f, 2, 2)
    np.save(f, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(InputError):
        load_vectors(f, 2, 2)  # never unpickled
