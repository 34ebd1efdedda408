"""The terminal's APDU side (amiko.transports.nfc) against the firmware's card (board/nfc_card.ApduCard)
on CPython, no radio: chaining and GET RESPONSE for any sizes, errors end the contact, and two cards
(two UIDs) in turn never share a contact."""

import threading

import pytest
from hypothesis import given, settings, strategies as st

from board.nfc_card import AMIKO_AID, ApduCard
from amiko.transports import nfc as tn


def selected_card():
    c = ApduCard()
    assert c.process(tn.select_apdu()) == b"\x90\x00"
    return c


@settings(max_examples=60, deadline=None)
@given(to_card=st.binary(max_size=4096), to_terminal=st.binary(max_size=3000))
def test_exchange_any_sizes(to_card, to_terminal):
    c = selected_card()
    c.queue(to_terminal)
    got = tn.exchange_message(c.process, to_card)
    assert got == to_terminal
    buf = bytearray(8192)
    n = c.read_into(buf)
    assert bytes(buf[:n]) == to_card
    assert c.errors == 0


def test_status_word_errors_end_the_contact():
    c = ApduCard()  # not selected: 6985
    with pytest.raises(tn.ContactLost, match="6985"):
        tn.exchange_message(c.process, b"abc")
    c = selected_card()
    with pytest.raises(tn.ContactLost, match="6a84"):
        tn.exchange_message(c.process, bytes(5000))  # over the card's limit
    assert tn.exchange_message(c.process, b"ok") == b""  # the card itself is fine afterwards


def test_truncated_answer_is_contact_lost():
    with pytest.raises(tn.ContactLost):
        tn.exchange_message(lambda apdu: b"\x90", b"")


class FakeTag:
    def __init__(self, card, log):
        self.card, self.log = card, log

    def transceive(self, apdu):
        self.log.append(apdu)
        if self.card is None:
            raise OSError("gone")
        return self.card.process(apdu)


class FakeTarget:
    def __init__(self, uid):
        self.sdd_res = uid
        self.sel_res = b"\x20"


def test_two_cards_in_turn_get_separate_contacts(monkeypatch):
    """Card A is in the field, then B (the reader's anticollision picked the other one): A's
    contact ends, B gets a new one; nothing written for A reaches B."""
    import nfc.tag

    cards = {b"A": selected_card(), b"B": ApduCard()}
    order = [FakeTarget(b"A"), FakeTarget(b"B")]
    log = []
    tags = {}

    def activate(clf, target):
        tags[target.sdd_res] = FakeTag(cards[target.sdd_res], log)
        return tags[target.sdd_res]

    monkeypatch.setattr(nfc.tag, "activate", activate)
    r = object.__new__(tn.Reader)
    r.path, r.stopping, r.failed, r.contact = "fake", False, None, None
    r.cond = threading.Condition()
    r.stats = {"contacts": 0, "left": 0, "not_wallet": 0, "apdus": 0, "seen": 0}
    r.clf = None

    ended = []

    def contact(target, uid):  # what Reader._run does around _contact: any error ends the contact
        try:
            r._contact(target, uid)
        except Exception as e:
            ended.append((uid, e))

    # card A: a contact; the terminal queues a message, then A leaves mid-contact
    t_a = threading.Thread(target=contact, args=(order[0], b"A"))
    t_a.start()
    ca = r.wait_contact(5)
    assert ca is not None and ca.uid == b"A"
    cards[b"A"].queue(b"from A")
    ca.send(b"for A")
    with ca.cond:
        ca.cond.wait_for(lambda: ca.inbound, 5)
    tags[b"A"].card = None  # A left the field
    t_a.join(5)
    assert ca.gone and r.contact is None
    # card B: a new contact, with nothing of A's
    assert [u for u, _ in ended] == [b"A"]
    t_b = threading.Thread(target=contact, args=(order[1], b"B"))
    t_b.start()
    cb = r.wait_contact(5)
    assert cb is not ca and cb.uid == b"B"
    buf = bytearray(100)
    n = cards[b"B"].read_into(buf)
    assert n == 0  # "for A" never reached B
    r.stopping = True
    t_b.join(5)
    assert ca.take() == b"from A" and cb.take() == b""
    assert r.stats["contacts"] == 2 and r.stats["left"] == 2
    assert AMIKO_AID in log[0]
