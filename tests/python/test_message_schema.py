"""schema/message.json judges the message corpus in tests/messages/ exactly as the parser does
(tests/message_corpus.rs checks the parser's side)."""

import json
import pathlib

import jsonschema
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schema" / "message.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def corpus(kind):
    return sorted((ROOT / "tests" / "messages" / kind).glob("*.json"))


def test_the_schema_is_a_valid_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", corpus("valid"), ids=lambda p: p.name)
def test_valid_messages_validate(path):
    VALIDATOR.validate(json.loads(path.read_text()))


@pytest.mark.parametrize("path", corpus("invalid"), ids=lambda p: p.name)
def test_invalid_messages_do_not_validate(path):
    errors = list(VALIDATOR.iter_errors(json.loads(path.read_text())))
    assert errors, f"{path.name} validates against the schema"


def hostile_corpus():
    lines = (ROOT / "tests" / "messages" / "hostile.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


# Codes for bodies that are not JSON documents (or that Python's json reads differently, as
# with a lone surrogate): the schema has nothing to say about them.
NOT_JSON = {"invalid_json", "invalid_encoding"}


@pytest.mark.parametrize("case", [c for c in hostile_corpus() if c["parse"] not in NOT_JSON], ids=lambda c: c["name"])
def test_the_schema_agrees_with_the_parser_on_the_hostile_corpus(case):
    document = json.loads(case["body"].replace("{rid}", "hostile-case"))
    valid = VALIDATOR.is_valid(document)
    assert valid == (case["parse"] == "ok"), f"schema says {'valid' if valid else 'invalid'}, parser says {case['parse']}"
