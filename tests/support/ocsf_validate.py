"""Validates OCSF events, one JSON object per line, against the OCSF schema.

Usage: python ocsf_validate.py FILE

The schema is OCSF's own, as the OCSF server exports it
(schema.ocsf.io/<version>/export/schema), shipped in the PyPI package
ocsf-json-schema (pinned in tests/run, with jsonschema); that package turns
an event class into a JSON Schema (draft 2020-12: required attributes,
types, enums, the ip_t pattern, no unknown attributes, `at_least_one`
constraints) for the profiles the event names in `metadata.profiles`, as
the OCSF server's validator does. Each event is checked against the class
its `class_uid` names, in the version its `metadata.version` names.

Prints one line per error (`line N: path: message`), then
`validated N events, M errors`, and exits 1 if there was any error (or no
event at all).
"""

import json
import sys

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

schemas = {}
validators = {}


def validator(version, class_uid, profiles):
    key = (version, class_uid, tuple(sorted(profiles)))
    if key not in validators:
        if version not in schemas:
            schemas[version] = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
        schema = schemas[version]
        name = schema.lookup_class_name_from_uid(class_uid)
        validators[key] = Draft202012Validator(
            schema.get_class_schema(class_name=name, profiles=list(profiles))
        )
    return validators[key]


def main(path):
    events = errors = 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            events += 1
            try:
                event = json.loads(line)
                version = event["metadata"]["version"]
                profiles = event["metadata"].get("profiles", [])
                check = validator(version, event["class_uid"], profiles)
            except Exception as e:  # not an OCSF event at all
                print(f"line {n}: not an OCSF event: {e!r}")
                errors += 1
                continue
            for e in check.iter_errors(event):
                where = "/".join(str(p) for p in e.absolute_path) or "(event)"
                print(f"line {n}: {where}: {e.message[:300]}")
                errors += 1
            # The rule the schema states in words: type_uid is the class
            # times 100 plus the activity.
            if event.get("type_uid") != event.get("class_uid", 0) * 100 + event.get("activity_id", 0):
                print(f"line {n}: type_uid is not class_uid * 100 + activity_id")
                errors += 1
    print(f"validated {events} events, {errors} errors")
    return 1 if errors or not events else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
