"""Independent readers for the end-to-end tests: Python's zipfile for archives and its email
package for messages. Prints JSON on stdout.

    inspect.py zip PATH     {"entries": [{"name", "size", "compress_type", "text"}], "testzip": null}
    inspect.py mime PATH    {"from", "to", "envelope_to", "subject", "text", "html"}
    inspect.py event PATH   {"errors": [...]}: the event checked against schema/event.json
                            (needs jsonschema: run it with the devstack's Python)
    inspect.py parquet PATH {"entries": [{"name", "compress_type", "schema", "rows"}]}: every
                            entry of the archive read with pyarrow, each value in PostgreSQL's
                            text form (needs pyarrow: the devstack's Python)
"""

import email
import email.policy
import json
import os
import pathlib
import sys
import zipfile

# This file is named like the standard library's inspect, which jsonschema and pyarrow import:
# its directory comes off the import path before either is imported.
_HERE = pathlib.Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if p and pathlib.Path(p).resolve() != _HERE]


def read_zip(path):
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
        entries = []
        for info in z.infolist():
            data = z.read(info)
            entries.append(
                {
                    "name": info.filename,
                    "size": info.file_size,
                    "compress_type": info.compress_type,
                    "text": data.decode("utf-8"),
                }
            )
    return {"testzip": bad, "entries": entries}


def pg_text(value):
    """A value as PostgreSQL prints it (psql's unaligned text), None for NULL."""
    import datetime
    import decimal

    if value is None:
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, datetime.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        if value.microsecond:
            text += ("%.6f" % (value.microsecond / 1e6))[1:].rstrip("0")
        return text
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def read_parquet(path):
    import io

    import pyarrow.parquet as pq

    entries = []
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            table = pq.read_table(io.BytesIO(z.read(info)), use_threads=False)
            rows = [[pg_text(v) for v in row.values()] for row in table.to_pylist()]
            entries.append(
                {
                    "name": info.filename,
                    "compress_type": info.compress_type,
                    "schema": [[f.name, str(f.type)] for f in table.schema],
                    "rows": rows,
                }
            )
    return {"entries": entries}


def read_mime(path):
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    return {
        "from": str(msg["From"]),
        "to": str(msg["To"]),
        "envelope_to": str(msg["X-Envelope-To"] or ""),
        "subject": str(msg["Subject"]),
        "text": text.get_content() if text else None,
        "html": html.get_content() if html else None,
    }


def check_event(path):
    import jsonschema

    root = pathlib.Path(__file__).resolve().parents[2]
    schema = json.loads((root / "schema" / "event.json").read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    with open(path) as f:
        event = json.load(f)
    return {"errors": [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(event)]}


if __name__ == "__main__":
    kind, path = sys.argv[1], sys.argv[2]
    readers = {
        "zip": read_zip,
        "mime": read_mime,
        "event": check_event,
        "parquet": read_parquet,
    }
    print(json.dumps(readers[kind](path)), flush=True)
    # Skip the interpreter's teardown: pyarrow's C++ thread pools can abort the process while
    # static destructors run ("terminate called without an active exception") on a loaded
    # machine, after the answer is already out.
    sys.stderr.flush()
    os._exit(0)
