"""The catalog queue contract: message ids, decoding, and the publish CLI's file check."""

import msgspec
import pytest

from artifacts import embed_queue as eq
from artifacts.cli.catalog import read_updates
from artifacts.errors import InputError


def test_message_ids_key_what_a_message_writes():
    job = eq.EmbedJob(
        catalog="shop",
        model="m",
        version=2,
        target="onnx-int8",
        run=1,
        items=[eq.JobItem(id="a", text="red shoe", digest=eq.text_digest("red shoe"))],
    )
    same = msgspec.structs.replace(job, run=7)  # another run, same writes: same id
    other = msgspec.structs.replace(job, version=3)
    assert eq.job_msg_id(job) == eq.job_msg_id(same) != eq.job_msg_id(other)
    # a change is named by its batch and position: the same file again is a repeat, a change
    # back to an earlier value in a later batch is not
    assert eq.update_msg_id("shop", "file-1", 0) == eq.update_msg_id("shop", "file-1", 0)
    assert eq.update_msg_id("shop", "file-1", 0) != eq.update_msg_id("shop", "file-2", 0)
    assert eq.update_msg_id("shop", "file-1", 0) != eq.update_msg_id("other", "file-1", 0)
    assert eq.redact("nats://user:secret@a:4222,nats://b:4222") == "nats://***@a:4222,nats://b:4222"
    assert eq.is_text_digest(eq.text_digest("x")) and not eq.is_text_digest("sha256:" + "0" * 57)


def test_decoding_refuses_malformed_messages():
    with pytest.raises(InputError, match="not an embed job"):
        eq.decode_job(b'{"catalog": "x"}')
    with pytest.raises(InputError, match="no text"):
        eq.decode_update(b'{"op": "upsert", "id": "a", "text": " "}')
    with pytest.raises(InputError, match="NUL"):
        eq.decode_update(b'{"op": "upsert", "id": "a", "text": "a\\u0000b"}')
    with pytest.raises(InputError, match="no dots"):
        eq.check_catalog_name("a.b")
    with pytest.raises(InputError, match="not a catalog update"):
        eq.decode_update(b'{"op": "explode", "id": "a"}')
    assert eq.decode_update(b'{"op": "delete", "id": "a"}').op == "delete"


def test_publish_reads_products_and_deletes_and_names_a_bad_line(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(
        '{"id": "a", "text": "red shoe", "fields": {"price": 3.5}}\n'
        '{"id": "b", "text": "lamp"}\n'
        '{"id": "c", "delete": true}\n'
    )
    ups = read_updates(f)
    assert [(u.op, u.id) for u in ups] == [("upsert", "a"), ("upsert", "b"), ("delete", "c")]
    assert ups[0].fields == {"price": 3.5} and ups[1].fields == {}
    f.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(InputError, match="line 2"):
        read_updates(f)
