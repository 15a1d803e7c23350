import subprocess
import sys

import msgspec
import pytest

from artifacts.errors import ManifestError, SchemaVersionError
from artifacts.manifest import FileEntry, decode, encode
from tests.factories import make_manifest


def test_round_trip_is_identity():
    m = make_manifest("onnx-int8")
    again = decode(encode(m))
    assert again == m
    assert encode(again) == encode(m)


def test_canonical_bytes_sorted_and_compact():
    data = encode(make_manifest())
    assert b" " not in data.replace(b"Test CPU", b"")  # no insignificant whitespace
    obj = msgspec.json.decode(data)
    assert list(obj) == sorted(obj)
    assert list(obj["model"]) == sorted(obj["model"])


def test_canonical_bytes_stable_across_processes():
    code = (
        "import sys; from tests.factories import make_manifest; from artifacts.manifest import encode;"
        "sys.stdout.buffer.write(encode(make_manifest('openvino-int8')))"
    )
    runs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
        for _ in range(2)
    }
    assert runs == {encode(make_manifest("openvino-int8"))}


def test_field_order_in_input_does_not_change_canonical_bytes():
    m = make_manifest()
    builtins = msgspec.to_builtins(m)
    reversed_json = msgspec.json.encode(dict(reversed(list(builtins.items()))))
    assert encode(decode(reversed_json)) == encode(m)


def test_future_schema_version_is_refused_with_clear_error():
    obj = msgspec.to_builtins(make_manifest())
    obj["schema_version"] = 2
    with pytest.raises(SchemaVersionError, match="schema_version 2 is not supported"):
        decode(msgspec.json.encode(obj))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"not json", "not valid JSON"),
        (b"[1,2]", "JSON object"),
        (b'{"model": {}}', "schema_version"),
        (b'{"schema_version": 1, "model": {"name": 3}}', "does not follow schema"),
    ],
)
def test_malformed_manifest(data, match):
    with pytest.raises(ManifestError, match=match):
        decode(data)


def test_model_file_by_backend():
    entry = FileEntry(path="model.xml", sha256="sha256:" + "1" * 64, size=1)
    m = msgspec.structs.replace(make_manifest("openvino-int8"), files=[entry])
    assert m.model_file() == "model.xml"
    with pytest.raises(ManifestError, match=r"no \.onnx file"):
        make_manifest("onnx-fp32").model_file()
