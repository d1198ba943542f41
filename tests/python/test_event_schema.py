"""schema/event.json is a valid schema, the example in docs/EVENTS.md satisfies it, and the
webhook sink's verifier (the one docs/EVENTS.md gives receivers) accepts exactly a fresh,
untampered signature. tests/events.rs checks the events the worker really sends against the
same schema."""

import hashlib
import hmac
import json
import pathlib
import re
import sys

import jsonschema
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schema" / "event.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
sys.path.insert(0, str(ROOT / "devstack" / "lib"))
from webhook_sink import verify  # noqa: E402


def documented_event():
    text = (ROOT / "docs" / "EVENTS.md").read_text()
    block = re.search(r"## The event\s+```json\n(.*?)```", text, re.S).group(1)
    return json.loads(block)


def test_the_schema_is_a_valid_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_the_documented_event_validates():
    VALIDATOR.validate(documented_event())


def test_a_failure_event_needs_its_code_and_may_not_carry_a_link():
    event = documented_event()
    event["status"] = "FAILED"
    assert not VALIDATOR.is_valid(event), "a FAILED event with a link and no error code"
    del event["link"], event["link_expires_at"]
    event.update(error_code="query_failed", reason="the query failed")
    VALIDATOR.validate(event)


def test_unknown_fields_and_statuses_are_refused():
    event = documented_event()
    assert not VALIDATOR.is_valid({**event, "surprise": 1})
    assert not VALIDATOR.is_valid({**event, "status": "QUEUED"})


SECRET = b"0123456789abcdef-secret"
BODY = b'{"event_id":"e"}'


def sign(t, body=BODY, secret=SECRET):
    return f"t={t},v1=" + hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def test_a_fresh_signature_verifies():
    assert verify(SECRET, sign(1_700_000_000), BODY, 1_700_000_010)


@pytest.mark.parametrize(
    "header, body, now",
    [
        (sign(1_700_000_000), b'{"event_id":"f"}', 1_700_000_000),  # body changed
        (sign(1_700_000_000, secret=b"another-secret-000"), BODY, 1_700_000_000),
        (sign(1_700_000_000), BODY, 1_700_000_000 + 301),  # replayed too late
        ("v1=abc", BODY, 1_700_000_000),  # no timestamp
        ("", BODY, 1_700_000_000),
    ],
)
def test_anything_else_does_not(header, body, now):
    assert not verify(SECRET, header, body, now)
