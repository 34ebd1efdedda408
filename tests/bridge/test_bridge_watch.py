"""The bridge learns a payment's progress by push (the node's `watch`), over BOLT 8 with a key
the shop node granted request, cancel and watch: real shop and payer nodes, the bridge and its
HTTP API in-process, every call it makes to the node counted."""

import tempfile

from amiko.bridge.nodeclient import NodeClient, load_key
from amiko_testing.network import Net
from test_web import client_for, make_bridge, run, until


class CountingClient(NodeClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    async def _request(self, method, params, timeout):
        self.calls.append(method)
        return await super()._request(method, params, timeout)


def test_page_shows_paid_by_push_without_status_polling(tmp_path):
    net = Net(tmp_path)
    try:
        shop = net.node("shop", meeting_points=["mp-shop"])
        payer = net.node("payer")
        net.connect(shop, payer)
        net.deposit(payer, shop, 10000)
        state_dir = tempfile.mkdtemp(dir=str(tmp_path))
        key = load_key(state_dir).pubkey.hex()
        shop.cli("grant", key, "--permissions", "request,cancel,watch")
        node = CountingClient(("tcp", "127.0.0.1", shop.port, bytes.fromhex(shop.key)), state_dir=state_dir)

        async def main():
            import asyncio

            bridge = make_bridge(node, state_dir=state_dir)
            client = await client_for(bridge)
            try:
                r = await client.post("/api/sale", json={"amount": 250, "receipt": "tea"})
                assert r.status == 200
                await until(lambda: bridge.machine.phase == "waiting", "waiting")
                url = bridge.machine.sale.url
                loop = asyncio.get_running_loop()
                paid = await loop.run_in_executor(None, lambda: payer.run("pay", url, "--yes", timeout=90))
                assert paid.returncode == 0 and paid.json["result"] == "committed", paid
                for _ in range(200):
                    snap = await (await client.get("/api/state")).json()
                    if snap["phase"] == "paid":
                        break
                    await asyncio.sleep(0.05)
                assert snap["phase"] == "paid", snap
                rows = await (await client.get("/api/payments")).json()
                assert rows[0]["state"] == "committed" and rows[0]["amount"] == 250
                # one watch, and nothing polled: no status at all (it is not even granted)
                assert node.calls.count("watch") == 1 and "status" not in node.calls, node.calls
                assert set(node.calls) <= {"request", "watch", "unwatch", "payments", "info"}, node.calls
            finally:
                await bridge.close()
                await client.close()
        run(main())
    finally:
        net.close()
