"""KServe request parsing under hostile bodies: linear-time structure checks, and every
malformed shape a 400, never a 500 with a traceback in the log."""

from __future__ import annotations

import struct
import time

import pytest

from artifacts.errors import InputError
from edge_runtime.http.kserve import _decode_bytes, _parse, check_structure


def test_an_unclosed_string_of_escaped_quotes_is_scanned_in_linear_time():
    # this took 39 s for 80 KB with a backtracking string pattern (and blocked the event loop)
    body = b'{"inputs":[{"name":"text","data":["' + b'\\"' * (1 << 20)
    t0 = time.perf_counter()
    check_structure(body, 10**9)  # the parser refuses it later; the scan must be quick
    assert time.perf_counter() - t0 < 1.0


def test_brackets_inside_strings_do_not_count_and_real_nesting_does():
    check_structure(b'{"a":["[[[[[[[[[[ \\" {{{{{{{{{", "b"]}', 100)
    with pytest.raises(InputError, match="nests deeper than 8"):
        check_structure(b"[" * 9 + b"]" * 9, 100)
    check_structure(b"[" * 8 + b"]" * 8, 100)
    with pytest.raises(InputError, match="over 3 elements"):
        check_structure(b"[1,2,3,4]", 3)


def _body(**over) -> bytes:
    import json

    head = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}
    head.update(over)
    return json.dumps(head).encode()


@pytest.mark.parametrize(
    "outputs",
    [["x"], 5, [{"parameters": 1}], [{"parameters": "binary"}]],
)
def test_malformed_outputs_are_a_400(outputs):
    with pytest.raises(InputError, match="outputs|parameters"):
        _parse(_body(outputs=outputs), None, 100)


def test_well_formed_outputs_ask_for_binary_or_not():
    assert _parse(_body(outputs=[{"name": "e", "parameters": {"binary_data": True}}]), None, 100)[2]
    assert not _parse(_body(outputs=[{"name": "e"}]), None, 100)[2]
    assert not _parse(_body(), None, 100)[2]


def test_input_parameters_must_be_an_object():
    import json

    head = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "parameters": "x"}]}
    with pytest.raises(InputError, match="parameters"):
        _parse(json.dumps(head).encode(), None, 100)


def test_binary_elements_not_utf8_or_beyond_the_shape_are_a_400():
    bad = struct.pack("<I", 2) + b"\xff\xfe"
    with pytest.raises(InputError, match="not UTF-8"):
        _decode_bytes(bad, 1, "text")
    many = (struct.pack("<I", 0)) * 1_000_000  # 4 MB of empty elements for a shape of 2
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="more than 2"):
        _decode_bytes(many, 2, "text")
    assert time.perf_counter() - t0 < 0.1
    assert _decode_bytes(struct.pack("<I", 2) + b"ok", 1, "text") == ["ok"]
