"""The numbers on the wire that are not message types (those are in messages.py and, for node
links, linkschema.py): one table, so a number means one thing whoever sends it.

Error{code} (message type 31), sent by every node-side endpoint (node links, payment links,
the provider, provisioning, the listener) before it closes or drops a message:
   1 PROTOCOL       bad frame bytes, an unexpected or out-of-sequence message
   2 BAD_MESSAGE    a message type or body that does not decode (unknown type, bad field)
   3 REJECTED       the handler refused the message
   4 INTERNAL       the handler failed unexpectedly
   5 AUTH           wrong key, no pinned key and no valid invitation
   6 UNKNOWN_LINK   no link of that name on this node
   7 BUSY           already connected, or too much in progress
   8 TIMEOUT        no answer in time, or no frame within the idle deadline
  40 UNAUTHENTICATED  provider: an authorisation whose MAC or counter does not verify
  41 UNEXPECTED       provider: a message it does not take on that connection

The wallet link's own numbers (Refused{code} 10-14) and its radio identifiers (the BLE GATT
UUIDs, the NFC application id) are in walletlink.py: that is the part a wallet loads, and a
wallet loads nothing of this module.
"""

PROTOCOL = 1
BAD_MESSAGE = 2
REJECTED = 3
INTERNAL = 4
AUTH = 5
UNKNOWN_LINK = 6
BUSY = 7
TIMEOUT = 8
UNAUTHENTICATED = 40
UNEXPECTED = 41

NAMES = {PROTOCOL: "protocol", BAD_MESSAGE: "bad_message", REJECTED: "rejected", INTERNAL: "internal", AUTH: "auth",
         UNKNOWN_LINK: "unknown_link", BUSY: "busy", TIMEOUT: "timeout", UNAUTHENTICATED: "unauthenticated",
         UNEXPECTED: "unexpected"}
