"""Customer receipt links: /r/<id>, one unguessable id (128 random bits) per paid payment.

The link is the customer's capability for that one payment: whoever has it sees its amount,
receipt text, state and proof (token, shop key, signature), and nothing else; there is no
way to list links or to reach one from a txid without being signed in. A link is made when
a signed-in page lists a committed payment, with a copy of the payment's row, so it keeps
working after the node forgets the payment; STATE_DIR/receipts.json (0600) keeps the newest
MAX_LINKS across restarts.
"""

import json
import os
import re
import secrets

from amiko.bridge.auth import private_dir, write_private

FILE_NAME = "receipts.json"
MAX_LINKS = 5000
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")  # 16 bytes, base64url without padding
KEPT = ("txid", "amount", "receipt", "state", "token", "payee_key", "signature", "created", "updated")


class ReceiptLinks:
    def __init__(self, state_dir):
        self.dir = state_dir
        self.path = os.path.join(state_dir, FILE_NAME)
        self._links = None  # id -> row (insertion ordered: oldest first)
        self._by_txid = {}

    def _load(self):
        if self._links is not None:
            return
        try:
            with open(self.path, "rb") as f:
                links = json.loads(f.read().decode("utf-8"))
            if not isinstance(links, dict):
                raise ValueError("not an object")
        except FileNotFoundError:
            links = {}
        except (OSError, ValueError) as e:
            raise OSError("cannot read the receipt links %s: %s" % (self.path, e)) from None
        self._links = links
        self._by_txid = {row.get("txid"): link_id for link_id, row in links.items()}

    def link_for(self, row):
        """The link id of a committed payment row (made and stored the first time)."""
        self._load()
        txid = row.get("txid")
        link_id = self._by_txid.get(txid)
        if link_id is not None:
            return link_id
        link_id = secrets.token_urlsafe(16)
        self._links[link_id] = {k: row.get(k) for k in KEPT}
        self._by_txid[txid] = link_id
        while len(self._links) > MAX_LINKS:
            old = next(iter(self._links))
            self._by_txid.pop(self._links.pop(old).get("txid"), None)
        private_dir(self.dir)
        write_private(self.path, json.dumps(self._links).encode("utf-8"))
        return link_id

    def get(self, link_id):
        """The stored row of a link id, or None (also for anything that is not a link id)."""
        if not isinstance(link_id, str) or not ID_PATTERN.match(link_id):
            return None
        self._load()
        return self._links.get(link_id)
