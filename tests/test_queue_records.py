"""The record file format: what round-trips, and every way a file can be refused."""

import json
import zlib

import pytest

from opik_otel.queue.records import (
    MAGIC,
    Record,
    decode_record,
    encode_header,
    record_problem,
    without_credentials,
)


def make_record(**overrides):
    fields = dict(
        kind="spans",
        body=bytes(range(256)) * 3,
        destination="https://opik.example/api/v1/private/otel/v1/traces",
        project="Proj é",
        workspace="team",
        content_type="application/x-protobuf",
        content_encoding="gzip",
        items=512,
    )
    fields.update(overrides)
    return Record(**fields)


def encoded(record):
    return encode_header(record) + record.body


def with_header(header, body=b"abc"):
    base = {
        "kind": "spans",
        "destination": "http://127.0.0.1:1/v1/traces",
        "project": None,
        "workspace": "default",
        "content_type": "application/x-protobuf",
        "content_encoding": None,
        "items": 1,
        "length": len(body),
        "crc32": zlib.crc32(body),
    }
    base.update(header)
    return MAGIC + json.dumps(base).encode("ascii") + b"\n" + body


def test_round_trip_keeps_every_field():
    record = make_record()
    assert decode_record(encoded(record)) == (record, "")
    none_fields = make_record(project=None, content_encoding=None, kind="traces", items=0)
    assert decode_record(encoded(none_fields)) == (none_fields, "")


def test_header_holds_no_body_bytes_and_is_one_ascii_line():
    header = encode_header(make_record(body=b"\n\n\xff"))
    assert header.endswith(b"\n") and header.count(b"\n") == 1
    header.decode("ascii")


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "bad magic"),
        (b"garbage\n", "bad magic"),
        (MAGIC + b"{}", "header line missing"),
        (MAGIC + b"x" * 70000 + b"\n", "header line missing or too long"),
        (MAGIC + b"{not json\n", "not JSON"),
        (MAGIC + b"[1, 2]\n", "not a JSON object"),
        (with_header({"length": None}), "lacks length"),
        (with_header({"crc32": 1.5}), "lacks length"),
        (with_header({"length": 4}), "truncated"),
        (with_header({"crc32": 12345}), "checksum"),
        (with_header({"items": "1"}), "wrong types"),
        (with_header({"items": True}), "wrong types"),
        (with_header({"project": 7}), "wrong types"),
        (with_header({"workspace": None}), "wrong types"),
        (with_header({"kind": "metrics"}), "unknown kind"),
        (with_header({"items": -1}), "non-negative"),
        (with_header({"project": "a\r\nInjected: yes"}), "project cannot be sent"),
        (with_header({"workspace": " padded"}), "workspace cannot be sent"),
        (with_header({"content_encoding": ""}), "content encoding cannot be sent"),
        (with_header({"destination": "file:///etc/passwd"}), "http(s)"),
        (with_header({"destination": "http://user:pw@host/x"}), "credentials"),
        (with_header({"destination": "http://"}), "http(s)"),
    ],
)
def test_damaged_or_crafted_files_are_refused_with_a_reason(data, reason):
    record, why = decode_record(data)
    assert record is None
    assert reason in why


def test_nan_in_header_is_refused():
    data = with_header({}).replace(b'"items": 1', b'"items": NaN')
    assert decode_record(data)[0] is None


def test_record_problem_accepts_good_records_and_names_bad_fields():
    assert record_problem(make_record()) is None
    assert record_problem(make_record(body="text")) == "body is not bytes"
    assert "destination" in record_problem(make_record(destination="not a url"))
    assert "content type" in record_problem(make_record(content_type="a\nb"))
    assert record_problem("not a record") == "not a Record"


def test_without_credentials():
    assert without_credentials("https://u:secret@h:8080/p?q=1") == "https://h:8080/p?q=1"
    assert without_credentials("https://h/p") == "https://h/p"
