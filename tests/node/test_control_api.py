"""The control API's contract (JSON-RPC 2.0, schemas/control/*.json) and its BOLT 8 side: a
bridge's key granted request/cancel/watch on real `amiko node` processes, watch pushes."""

import asyncio
import concurrent.futures
import json
import os
import socket
import tempfile

import jsonschema
import pytest

from amiko_core import frame as frames

from amiko.bridge.nodeclient import NodeClient, load_key
from amiko.node import control_stream, grants, schemas
from amiko.node.control import ControlError
from amiko.node.identity import Identity
from amiko.wire.stream import connect
from amiko_testing.network import run_amiko


def run(coro, timeout=120):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(coro, timeout)).result()


def node_table(tmp_path, monkeypatch):
    """Every method of a real node started in-process (developer ones on)."""
    from amiko.node import daemon
    from amiko.node.home import Home
    from amiko_testing.network import free_port

    home_dir = tmp_path / "n"
    assert run_amiko(["init", "--home", home_dir, "--listen", "127.0.0.1:%d" % free_port()]).returncode == 0
    home = Home(str(home_dir))

    async def main():
        node = daemon.Node(home, home.load_config(), daemon._modules()[1].Identity.load(home.key_path), developer=True)
        try:
            await node.start()
            return set(node.control.methods)
        finally:
            await node.stop()
    return run(main(), 60)


def test_every_method_has_a_schema_and_every_schema_a_method(tmp_path, monkeypatch):
    table = node_table(tmp_path, monkeypatch)
    assert table == set(schemas.names()), (table - set(schemas.names()), set(schemas.names()) - table)
    for name in schemas.names():
        doc = schemas.load(name)
        for part in ("request", "response"):
            jsonschema.Draft202012Validator.check_schema(doc[part])
        assert doc["permission"] == grants.permission_of(name), name
        assert doc["description"]
    # what a granted key can ever reach: nothing that pays, moves funds, links or grants
    reachable = grants.methods_of(grants.PERMISSIONS)
    assert reachable == {"info", "request", "cancel", "watch", "unwatch", "payments"}


def test_a_call_outside_the_schemas_fails():
    with pytest.raises(schemas.SchemaViolation, match="cancel_request.*no schema"):
        schemas.validate_call("cancel_request", {"payment_id": "x"})
    with pytest.raises(schemas.SchemaViolation, match="params of request"):
        schemas.validate_call("request", {"amount": 5, "memo": "x"})
    with pytest.raises(schemas.SchemaViolation, match="params of watch"):
        schemas.validate_call("watch", {"txid": "ab" * 20, "payment_id": "p"})


def test_jsonrpc_errors_on_the_unix_socket(net):
    a = net.node("a", meeting_points=["mp-a"])
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(a.home / "control.sock"))
    f = s.makefile("rwb")

    def ask(raw):
        f.write(raw + b"\n")
        f.flush()
        return json.loads(f.readline())

    assert ask(b"{nope")["error"]["code"] == -32700
    r = ask(b'{"id": 1, "method": "info"}')  # no "jsonrpc": "2.0"
    assert r["jsonrpc"] == "2.0" and r["error"]["code"] == -32600 and r["error"]["data"]["reason"] == "bad_request"
    r = ask(b'{"jsonrpc": "2.0", "id": 2, "method": "nosuch"}')
    assert r["id"] == 2 and r["error"]["code"] == -32601 and r["error"]["data"]["reason"] == "unknown_method"
    r = ask(b'{"jsonrpc": "2.0", "id": 3, "method": "request", "params": {"amount": -5}}')
    assert r["error"]["code"] == -32602 and r["error"]["data"]["reason"] == "invalid"
    r = ask(b'{"jsonrpc": "2.0", "id": "x", "method": "cancel", "params": {"id": "nope"}}')
    assert r["id"] == "x" and r["error"]["data"]["reason"] == "not_found" and r["error"]["code"] == 1
    # a notification (no id) is run and not answered: the next answer is the next request's
    f.write(b'{"jsonrpc": "2.0", "method": "info"}\n')
    r = ask(b'{"jsonrpc": "2.0", "id": 4, "method": "info"}')
    assert r["id"] == 4 and r["result"]["name"] == "a"
    s.close()
    # the CLI's user-visible codes stay the string codes
    r = a.run("cancel", "nope")
    assert r.returncode == 2 and r.json["error"]["code"] == "not_found"


def _client(node, state_dir):
    return NodeClient(("tcp", "127.0.0.1", node.port, bytes.fromhex(node.key)), timeout=10, state_dir=state_dir)


def test_a_bridge_key_granted_request_cancel_watch_cannot_pay(net):
    shop = net.node("shop", meeting_points=["mp-shop"])
    payer = net.node("payer")
    net.connect(shop, payer)
    net.deposit(payer, shop, 1000)
    net.deposit(shop, payer, 1000)
    state_dir = tempfile.mkdtemp(prefix="amiko-bridge-key-", dir=str(net.dir))
    bridge_key = load_key(state_dir).pubkey.hex()
    config = net.dir / "bridge.toml"
    config.write_text('node = "tcp://127.0.0.1:%d?key=%s"\nstate_dir = "%s"\n' % (shop.port, shop.key, state_dir))
    r = run_amiko(["bridge", "key", "--config", config, "--json"])
    assert r.returncode == 0 and r.json["key"] == bridge_key, r
    assert os.stat(r.json["path"]).st_mode & 0o777 == 0o600

    async def ungranted():
        c = _client(shop, state_dir)
        try:
            with pytest.raises(ControlError) as e:
                await c.call("request", {"amount": 5, "receipt": "x"})
            assert e.value.code == "forbidden" and "amiko grant %s" % bridge_key in e.value.message
        finally:
            await c.close()
    run(ungranted())

    r = shop.run("grant", bridge_key, "--permissions", "request,cancel,watch")
    assert r.returncode == 0 and r.json["permissions"] == ["cancel", "request", "watch"], r
    listed = shop.cli("grant", "--list")["grants"]
    assert [g["key"] for g in listed] == [bridge_key]
    r = shop.run("grant", bridge_key, "--permissions", "request,pay_start")
    assert r.returncode == 2 and "cannot grant pay_start" in r.json["error"]["message"], r

    async def granted():
        c = _client(shop, state_dir)
        try:
            assert (await c.call("info"))["key"] == shop.key
            req = await c.call("request", {"amount": 7, "receipt": "tea"})
            watch = await c.watch({"txid": req["txid"]})
            assert watch.state["state"] == "requested"
            for method, params in [("pay_start", {"url": req["url"]}), ("deposit", {"link": "payer", "amount": 5}),
                                   ("withdraw", {"link": "payer", "channel": 0}), ("link", {"name": "evil"}),
                                   ("wallet_topup", {"wallet": "w", "amount": 5}), ("wallet_info", {"wallet": "w"}),
                                   ("wallet_provision", {"wallet": "w", "key": "00" * 32, "limit": 1, "daily": 1,
                                                         "auto": 0}),
                                   ("wallet_invite", {"limit": 1, "daily": 1, "auto": 0}), ("status", {}),
                                   ("grant", {"key": bridge_key, "permissions": ["watch"]}), ("grant_list", {})]:
                with pytest.raises(ControlError) as e:
                    await c.call(method, params)
                assert e.value.code == "forbidden" and "not granted to this key" in e.value.message, (method, e.value)
            # the payer pays: the watch hears every state by push, on the same connection
            loop = asyncio.get_running_loop()
            paying = loop.run_in_executor(None, lambda: payer.run("pay", req["url"], "--yes", timeout=90))
            states = []
            while not states or states[-1] != "committed":
                note = await asyncio.wait_for(watch.next(), 60)
                states.append(note["state"])
            r = await paying
            assert r.returncode == 0 and r.json["result"] == "committed", r
            assert states[-1] == "committed" and len(states) >= 2 and None not in states, states
            rows = (await c.call("payments", {}))["payments"]
            assert rows[0]["txid"] == req["txid"] and rows[0]["state"] == "committed"
            req2 = await c.call("request", {"amount": 3})
            assert (await c.call("cancel", {"id": req2["payment_id"], "reason": "shop"}))["result"] == "cancelled"
        finally:
            await c.close()
    run(granted())
    assert shop.cli("status")["balance"] >= 1007

    # revoked: its open connection closes at once, and the key is refused again
    async def revoked():
        c = _client(shop, state_dir)
        try:
            assert (await c.call("info"))["name"] == "shop"
            loop = asyncio.get_running_loop()
            r = await loop.run_in_executor(None, lambda: shop.cli("grant", "--revoke", bridge_key))
            assert r["revoked"] is True and r["closed"] == 1, r
            with pytest.raises(ControlError) as e:
                await c.call("info")
            assert e.value.code == "forbidden"
        finally:
            await c.close()
    run(revoked())
    run(ungranted())


def test_control_frames_hostile(net):
    shop = net.node("shop")
    ident = Identity.generate()
    shop.cli("grant", ident.pubkey.hex(), "--permissions", "watch")

    async def main():
        s = await connect("127.0.0.1", shop.port, ident, bytes.fromhex(shop.key))
        try:
            # a method not granted, not JSON, then an oversized message in parts: clear errors,
            # then the connection closes
            s.send(control_stream.frames_of({"jsonrpc": "2.0", "id": 1, "method": "request", "params": {"amount": 5}})[0])
            answer = json.loads((await s.recv(timeout=10)).body[1:])
            assert answer["error"]["data"]["reason"] == "forbidden" and answer["id"] == 1
            s.send(frames.encode(control_stream.CONTROL, bytes([control_stream.LAST]) + b"{nope"))
            answer = json.loads((await s.recv(timeout=10)).body[1:])
            assert answer["error"]["code"] == -32700 and answer["id"] is None
            s.send(control_stream.frames_of({"jsonrpc": "2.0", "id": 3, "method": "payments"})[0])
            answer = json.loads((await s.recv(timeout=10)).body[1:])
            assert answer["id"] == 3 and answer["result"] == {"payments": []}
            big = {"jsonrpc": "2.0", "id": 2, "method": "watch", "params": {"payment_id": "x" * 70000}}
            for fr in control_stream.frames_of(big):
                s.send(fr)
            with pytest.raises(Exception):
                while True:
                    await s.recv(timeout=10)
        finally:
            s.abort()
        # the node still serves granted keys
        c = NodeClient(("tcp", "127.0.0.1", shop.port, bytes.fromhex(shop.key)), timeout=10,
                       state_dir=tempfile.mkdtemp(dir=str(net.dir)))
        try:
            with pytest.raises(ControlError) as e:
                await c.call("info")
            assert e.value.code == "forbidden"
        finally:
            await c.close()
    run(main())


def test_an_internal_error_logs_no_parameter_values(caplog):
    """A method failing unexpectedly is logged with its name and parameter names only: values
    (invitation secrets, tokens) never reach node.log."""
    from amiko.node.control import Connection, dispatch

    secret = "c0ffee" * 10

    def broken(params, conn):
        raise KeyError("boom")

    raw = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "link", "params": {"name": "dave", "invite": secret}})
    with caplog.at_level("ERROR"):
        response = asyncio.run(dispatch({"link": broken}, raw.encode(), Connection()))
    assert response["error"]["data"]["reason"] == "internal"
    text = caplog.text
    assert "'link' failed (params: invite, name)" in text
    assert secret not in text


def _ask(method, params, fn, check, caplog):
    from amiko.node.control import Connection, dispatch

    raw = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    with caplog.at_level("ERROR"):
        return asyncio.run(dispatch({method: fn}, raw.encode(), Connection(check=check)))


def test_a_checking_node_answers_nothing_outside_its_schemas(caplog):
    """`--dev-check-schemas` (every test node): an answer the schema does not allow, or a call it
    forbids that the method took anyway, is an internal error logged as SCHEMA VIOLATION; a method
    refusing a forbidden call is right. Without the option the node answers as it always does."""
    info = {"name": "n", "listen": "127.0.0.1:1", "key": "02" * 33, "pid": 1, "home": "/h", "started": 0}
    bad = dict(info, started="yesterday")
    assert _ask("info", {}, lambda p, c: info, True, caplog)["result"] == info
    r = _ask("info", {}, lambda p, c: bad, True, caplog)
    assert r["error"]["data"]["reason"] == "internal" and "result of info" in r["error"]["message"]
    assert "SCHEMA VIOLATION: result of info" in caplog.text
    assert _ask("info", {}, lambda p, c: bad, False, caplog)["result"] == bad
    caplog.clear()

    def lenient(params, conn):  # takes a parameter its schema does not have
        return {"url": "x", "payment_id": "p", "txid": "00" * 20, "amount": 5, "receipt": "", "meeting_points": []}

    r = _ask("request", {"amount": 5, "memo": "x"}, lenient, True, caplog)
    assert r["error"]["data"]["reason"] == "internal" and "params of request" in r["error"]["message"]

    def strict(params, conn):
        raise ControlError("invalid", "amount must be positive")

    r = _ask("request", {"amount": -5}, strict, True, caplog)
    assert r["error"]["data"]["reason"] == "invalid"


def test_test_nodes_check_their_schemas(net):
    """The nodes of the tests run with --developer --dev-check-schemas (amiko_testing.network)."""
    a = net.node("a")
    assert "--dev-check-schemas" in a.proc.args and "--developer" in a.proc.args
    log = (a.home / "node.log").read_text()
    assert "DEVELOPER MODE" in log
