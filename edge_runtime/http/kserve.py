"""KServe v2 Open Inference Protocol, including Triton's binary tensor data extension, so
``tritonclient[http]`` works unchanged.

Tensors per task:
* embedding: input ``text`` BYTES [N] → output ``embedding`` FP32 [N, dim]
* rerank:    inputs ``query`` BYTES [1] and ``documents`` BYTES [N] → ``scores`` FP32 [N]
* classify:  input ``text`` BYTES [N] → ``probabilities`` FP32 [N, labels]
"""

from __future__ import annotations

import re
import struct

import msgspec
import numpy as np
from litestar import Request, Response, get, post

from artifacts.errors import NotReady
from edge_runtime.errors import BadRequest, UnknownModel
from edge_runtime.http.observe import Observed, served_headers
from edge_runtime.inference.engine import Inference
from edge_runtime.inference.results import Served
from edge_runtime.model_service import ModelService

HEADER_LEN = "inference-header-content-length"

INPUTS = {
    "embedding": [("text", [-1])],
    "rerank": [("query", [1]), ("documents", [-1])],
    "classify": [("text", [-1])],
}
OUTPUTS = {"embedding": "embedding", "rerank": "scores", "classify": "probabilities"}
MAX_DEPTH = 8  # {"inputs": [{"data": [[...]]}]} needs 4; more is an attack on the parser
# A JSON string, or an unterminated one up to the end: possessive (no backtracking), so an
# unclosed string full of escaped quotes costs one linear pass, not one pass per quote.
_STRING = re.compile(rb'(?s)"(?:[^"\\]|\\.)*+(?:"|\\?\Z)')


def check_structure(raw: bytes, max_elements: int) -> None:
    """Nesting depth and element count of a JSON document, bounded before it is parsed
    (a deeply nested body would otherwise exhaust the parser's recursion: 400, not 500).
    Linear in the body, a few bytes of memory per body byte."""
    skeleton = np.frombuffer(_STRING.sub(b'""', raw), dtype=np.uint8)
    delta = ((skeleton == ord("[")) | (skeleton == ord("{"))).view(np.int8) - (
        (skeleton == ord("]")) | (skeleton == ord("}"))
    ).view(np.int8)
    depth = np.cumsum(delta, dtype=np.int32)
    if depth.size and int(depth.max()) > MAX_DEPTH:
        raise BadRequest(f"request JSON nests deeper than {MAX_DEPTH} levels")
    elements = int(np.count_nonzero(skeleton == ord(","))) + 1
    if elements > max_elements:
        raise BadRequest(f"request JSON holds over {max_elements} elements")


def _service(request: Request, name: str) -> ModelService:
    models = request.app.state["node"].models
    svc = models.get(name)
    if svc is None:
        raise UnknownModel(
            f"model {name!r} is not served here; served: {', '.join(models) or 'none'}"
        )
    return svc


@get("/v2/health/live", sync_to_thread=False)
def live() -> dict:
    return {"live": True}


@get("/v2/health/ready", sync_to_thread=False)
def ready(request: Request) -> Response:
    ok = request.app.state["node"].ready
    return Response({"ready": ok}, status_code=200 if ok else 503)


@get("/v2", sync_to_thread=False)
def server_metadata() -> dict:
    return {"name": "shipyard-edge", "version": "1", "extensions": ["binary_tensor_data"]}


def _metadata(svc) -> dict:
    if svc.serving is None:
        raise NotReady(f"model {svc.name} is not ready ({svc.public_reason})")
    m = svc.serving.manifest
    task = m.model.task
    out_shape = {
        "embedding": [-1, m.io.dim],
        "rerank": [-1],
        "classify": [-1, len(m.model.labels) or m.io.dim],
    }[task]
    return {
        "name": svc.name,
        "versions": [str(m.model.version)],
        "platform": f"shipyard_{m.target.backend}",
        "inputs": [{"name": n, "datatype": "BYTES", "shape": s} for n, s in INPUTS[task]],
        "outputs": [{"name": OUTPUTS[task], "datatype": "FP32", "shape": out_shape}],
        "parameters": {"task": task, "target": m.bundle_key(), "labels": ",".join(m.model.labels)},
    }


@get(
    ["/v2/models/{name:str}", "/v2/models/{name:str}/versions/{version:str}"], sync_to_thread=False
)
def model_metadata(request: Request, name: str, version: str | None = None) -> dict:
    return _metadata(_service(request, name))


@get(
    ["/v2/models/{name:str}/ready", "/v2/models/{name:str}/versions/{version:str}/ready"],
    sync_to_thread=False,
)
def model_ready(request: Request, name: str, version: str | None = None) -> Response:
    svc = _service(request, name)
    ok = svc.state.serving and (
        version is None or (svc.serving is not None and str(svc.serving.version) == version)
    )
    return Response({"name": name, "ready": ok}, status_code=200 if ok else 503)


def _decode_bytes(raw: bytes, count: int, name: str) -> list[str]:
    """Triton BYTES serialisation: per element, a 4-byte little-endian length, then the bytes."""
    out: list[str] = []
    pos = 0
    while pos < len(raw):
        if count >= 0 and len(out) >= count:  # more elements than the shape: stop here
            raise BadRequest(f"input {name!r}: binary data holds more than {count} elements")
        if pos + 4 > len(raw):
            raise BadRequest(f"input {name!r}: truncated BYTES element length")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise BadRequest(f"input {name!r}: BYTES element overruns the tensor")
        try:
            out.append(raw[pos : pos + n].decode("utf-8", errors="strict"))
        except UnicodeDecodeError:
            raise BadRequest(f"input {name!r}: element {len(out)} is not UTF-8") from None
        pos += n
    if count >= 0 and len(out) != count:
        raise BadRequest(
            f"input {name!r}: shape says {count} elements, binary data holds {len(out)}"
        )
    return out


def _split(request_body: bytes, header_len: str | None, max_elements: int) -> tuple[dict, bytes]:
    """The JSON header and the binary tail (Triton's binary tensor extension)."""
    if header_len is not None:
        try:
            n = int(header_len)
        except ValueError:
            raise BadRequest("Inference-Header-Content-Length must be an integer") from None
        if not 0 < n <= len(request_body):
            raise BadRequest("Inference-Header-Content-Length is out of range")
        head_raw, binary = request_body[:n], request_body[n:]
    else:
        head_raw, binary = request_body, b""
    check_structure(head_raw, max_elements)
    try:
        head = msgspec.json.decode(head_raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request is not valid JSON: {exc}") from exc
    if not isinstance(head, dict) or not isinstance(head.get("inputs"), list) or not head["inputs"]:
        raise BadRequest("request needs a non-empty 'inputs' list")
    return head, binary


def _strings(inp: dict, binary: bytes, offset: int) -> tuple[list[str], int]:
    """One BYTES input as strings, and the binary offset after it."""
    name = inp["name"]
    if inp.get("datatype") != "BYTES":
        raise BadRequest(
            f"input {name!r} must have datatype BYTES (text), got {inp.get('datatype')!r}"
        )
    shape = inp.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(f"input {name!r} needs a shape of non-negative integers")
    count = int(np.prod(shape)) if shape else 1
    params = inp.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(f"input {name!r}: 'parameters' must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise BadRequest(f"input {name!r}: binary_data_size does not fit the request body")
        return _decode_bytes(binary[offset : offset + size], count, name), offset + size
    data = inp.get("data")
    flat = list(np.asarray(data, dtype=object).reshape(-1)) if isinstance(data, list) else None
    if flat is None or not all(isinstance(x, str) for x in flat):
        raise BadRequest(f"input {name!r}: 'data' must be a (nested) list of strings")
    if len(flat) != count:
        raise BadRequest(
            f"input {name!r}: shape {shape} holds {count} elements, data has {len(flat)}"
        )
    return flat, offset


def _parse(
    request_body: bytes, header_len: str | None, max_elements: int
) -> tuple[dict, dict[str, list[str]], bool]:
    """(header JSON, inputs by name as strings, whether any output asked for binary data)."""
    head, binary = _split(request_body, header_len, max_elements)
    inputs: dict[str, list[str]] = {}
    offset = 0
    for inp in head["inputs"]:
        if not isinstance(inp, dict) or not isinstance(inp.get("name"), str):
            raise BadRequest("every input needs a name")
        inputs[inp["name"]], offset = _strings(inp, binary, offset)
    return head, inputs, _wants_binary(head.get("outputs"))


def _wants_binary(outputs: object) -> bool:
    """Whether any requested output asks for binary data (malformed lists are a 400)."""
    if outputs is None:
        return False
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise BadRequest("'outputs' must be a list of objects")
    params = [o.get("parameters") or {} for o in outputs]
    if not all(isinstance(p, dict) for p in params):
        raise BadRequest("an output's 'parameters' must be an object")
    return any(p.get("binary_data") for p in params)


async def _run(
    inf: Inference, name: str, task: str, inputs: dict[str, list[str]], deadline: float
) -> tuple[Served, np.ndarray]:
    """Run the task; the output tensor: embeddings, rerank logits, class probabilities."""
    if task == "rerank":
        if len(inputs["query"]) != 1:
            raise BadRequest("input 'query' must hold exactly one string")
        rr = await inf.rerank(name, inputs["query"][0], inputs["documents"], deadline)
        return rr, rr.logits
    if task == "classify":
        cl = await inf.classify(name, inputs["text"], deadline)
        return cl, cl.probabilities
    em = await inf.embed(name, inputs["text"], deadline)
    return em, em.vectors


@post(
    ["/v2/models/{name:str}/infer", "/v2/models/{name:str}/versions/{version:str}/infer"],
    status_code=200,
)
async def infer(request: Request, name: str, version: str | None = None) -> Response:
    with Observed(request, "kserve", name if name in request.app.state["node"].models else "-"):
        body = await request.body()
        inf: Inference = request.app.state["inference"]
        head, inputs, want_binary = _parse(
            body, request.headers.get(HEADER_LEN), 4 * inf.max_inputs + 256
        )
        svc = _service(request, name)
        if svc.serving is None:
            raise NotReady(f"model {svc.name} is not ready ({svc.public_reason})")
        if version is not None and str(svc.serving.version) != version:
            raise BadRequest(f"{name} serves version {svc.serving.version}, not {version}")
        task = svc.serving.manifest.model.task
        expected = [n for n, _ in INPUTS[task]]
        if sorted(inputs) != sorted(expected):
            raise BadRequest(f"{name} ({task}) takes inputs {expected}, got {sorted(inputs)}")
        deadline = inf.deadline(request.headers.get("x-request-timeout-ms"))
        served, tensor = await _run(inf, name, task, inputs, deadline)
        out = np.ascontiguousarray(tensor, dtype="<f4")
        output: dict = {"name": OUTPUTS[task], "datatype": "FP32", "shape": list(out.shape)}
        reply: dict = {
            "model_name": name,
            "model_version": str(served.version),
            "outputs": [output],
        }
        if "id" in head:
            reply["id"] = head["id"]
        headers = served_headers(served)
        if want_binary:
            raw = out.tobytes()
            output["parameters"] = {"binary_data_size": len(raw)}
            head_bytes = msgspec.json.encode(reply)
            headers["Inference-Header-Content-Length"] = str(len(head_bytes))
            return Response(
                head_bytes + raw, media_type="application/octet-stream", headers=headers
            )
        output["data"] = out.reshape(-1).tolist()
        return Response(reply, headers=headers)


handlers = [live, ready, server_metadata, model_metadata, model_ready, infer]
