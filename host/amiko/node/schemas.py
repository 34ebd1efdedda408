"""The control API's contract: schemas/control/METHOD.json, one file per control method.

Each file holds {"method", "description", "permission", "request", "response"[, "notifications"]}:
JSON schemas (draft 2020-12) of the method's params and result, and of the notifications a
subscription method pushes ({method name: params schema}). "permission" is what a BOLT 8 key
needs to call it (amiko.node.grants): a permission name, "any" (every granted key) or
"operator" (the unix socket only).

A node started with `amiko node --developer --dev-check-schemas` (every node the tests start,
amiko_testing.network) validates each call, answer and notification on its control connections
(amiko.node.control.dispatch, Connection.notify): a method without a schema, params the schema
does not allow that the method accepted anyway (a method refusing them is right), or a result or
notification the schema does not allow, raises SchemaViolation, which the node logs and answers
as an internal error. jsonschema is a development dependency only.
"""

import functools
import json
import os

SCHEMA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "schemas", "control")


class SchemaViolation(AssertionError):
    """A control call or answer outside the contract (raised only when checking is on)."""


def names(directory=SCHEMA_DIR):
    """The methods that have a schema."""
    return sorted(f[:-len(".json")] for f in os.listdir(directory) if f.endswith(".json"))


@functools.lru_cache(maxsize=None)
def load(method, directory=SCHEMA_DIR):
    path = os.path.join(directory, method + ".json")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise SchemaViolation("control method %r has no schema (%s): it is not part of the control API"
                              % (method, os.path.normpath(path))) from None
    if doc.get("method") != method:
        raise SchemaViolation("%s describes method %r" % (path, doc.get("method")))
    return doc


def _validate(value, schema, what):
    import jsonschema

    try:
        jsonschema.validate(value, schema, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as e:
        raise SchemaViolation("%s: %s (at %s)" % (what, e.message, "/".join(str(p) for p in e.absolute_path) or "top"))


def validate_call(method, params):
    _validate(params, load(method)["request"], "params of %s" % method)


def validate_result(method, result):
    _validate(result, load(method)["response"], "result of %s" % method)


def validate_notification(method, name, params):
    schema = load(method).get("notifications", {}).get(name)
    if schema is None:
        raise SchemaViolation("method %s sends no notification %r" % (method, name))
    _validate(params, schema, "notification %s of %s" % (name, method))


def validate_notification_named(name, params):
    """A notification as a connection sends it (by its name alone): the subscription method
    whose schema lists it decides."""
    for method in names():
        if name in load(method).get("notifications", {}):
            return validate_notification(method, name, params)
    raise SchemaViolation("no control method's schema describes a notification %r" % name)
