"""Amiko Pay's shared core: runs unchanged on MicroPython and CPython.

Modules: cbor (deterministic CBOR), frame (transport framing), hashing,
token (commit tokens), messages (wire messages; linkschema holds the node-link
types and register(), loaded on first use), url (amikopay/amikolink URLs),
paylink (sans-IO payer/payee state machines), errors.
"""

VERSION = "0.1.0"
