"""Sample messages of every type, the same content in both encodings.

Shared by the CPython and the MicroPython core benchmarks. `original_json`
gives the content as the 2016 prototype sent it: one JSON object per line,
the class name in "__class__", camelCase attributes, binary values as hex
(JSON has no byte strings).
"""

from amiko_core import messages as m

TXID = bytes(range(20))
TOKEN = bytes(range(32, 64))
KEY = b"\x02" + bytes(range(32))
SIG = bytes(range(64))
PAY_ID = "Xq3vT9mPz2kLw8Rb5nYc1A"


def samples():
    """(name, Message, original attribute dict) for every message type."""
    return [
        ("Pay", m.Message(m.PAY, {"id": PAY_ID}), {"ID": PAY_ID}),
        (
            "Receipt",
            m.Message(m.RECEIPT, {"id": PAY_ID, "amount": 125000, "receipt": "2 coffees, 1 croissant",
                                  "txid": TXID, "meeting_points": ["mp1.shopnet"]}),
            {"amount": 125000, "receipt": "2 coffees, 1 croissant", "transactionID": TXID,
             "meetingPoints": ["mp1.shopnet"]},
        ),
        ("Confirm", m.Message(m.CONFIRM, {"id": PAY_ID, "meeting_point": "mp1.shopnet"}),
         {"ID": PAY_ID, "meetingPointID": "mp1.shopnet"}),
        ("Cancel", m.Message(m.CANCEL, {"id": PAY_ID}), {"ID": PAY_ID}),
        ("HavePayeeRoute", m.Message(m.HAVE_PAYEE_ROUTE, {"id": "__payer__", "txid": TXID}),
         {"ID": "__payer__", "transactionID": TXID}),
        ("Commit", m.Message(m.COMMIT, {"token": TOKEN}), {"token": TOKEN}),
        ("ConnectLink", m.Message(m.CONNECT_LINK, {"link": "bob", "key": KEY}),
         {"ID": "bob", "callbackHost": "203.0.113.7", "callbackPort": 4321, "callbackID": "alice"}),
        (
            "MakeRoute",
            m.Message(m.MAKE_ROUTE, {"txid": TXID, "side": 0, "amount": 125000, "meeting_point": "mp1.shopnet",
                                     "channel": 3, "deadline": 1795000000}),
            {"amount": 125000, "transactionID": TXID, "startTime": 1795000000, "endTime": 1795000000,
             "meetingPointID": "mp1.shopnet", "channelIndex": 3, "isPayerSide": True},
        ),
        ("HaveNoRoute", m.Message(m.HAVE_NO_ROUTE, {"txid": TXID, "side": 0}),
         {"transactionID": TXID, "isPayerSide": True}),
        ("CancelRoute", m.Message(m.CANCEL_ROUTE, {"txid": TXID, "side": 0}),
         {"transactionID": TXID, "isPayerSide": True}),
        ("HaveRoute", m.Message(m.HAVE_ROUTE, {"txid": TXID, "side": 0, "deadline": 1795000005}),
         {"transactionID": TXID, "isPayerSide": True, "startTime": 1795000000, "endTime": 1795000005}),
        ("Lock", m.Message(m.LOCK, {"txid": TXID, "side": 0, "amount": 125000}),
         {"transactionID": TXID, "isPayerSide": True, "payload": ""}),
        ("RequestCommit", m.Message(m.REQUEST_COMMIT, {"txid": TXID, "side": 1, "token": TOKEN}),
         {"transactionID": TXID, "isPayerSide": False, "token": TOKEN}),
        ("SettleCommit", m.Message(m.SETTLE_COMMIT, {"txid": TXID, "side": 1, "token": TOKEN}),
         {"transactionID": TXID, "isPayerSide": False, "token": TOKEN, "payload": ""}),
        ("SettleRollback", m.Message(m.SETTLE_ROLLBACK, {"txid": TXID, "side": 1}),
         {"transactionID": TXID, "isPayerSide": False, "payload": ""}),
        ("Deposit", m.Message(m.DEPOSIT, {"channel": 3, "amount": 1000000}),
         {"channelIndex": 3, "amount": 1000000, "type": "plain"}),
        ("Withdraw", m.Message(m.WITHDRAW, {"channel": 3}), {"channelIndex": 3}),
        ("Error", m.Message(m.ERROR, {"code": 3, "reason": "no such transaction"}), None),
    ]
