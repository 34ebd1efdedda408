"""Instructions the wallet executes per payment, for callgrind (bench/wallet.py --cpu). Prints nothing.

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=filter_iternext \\
        micropython bench/wallet_instructions.py wallet ROOT PAYMENTS SKIP [pure]
    ... micropython bench/wallet_instructions.py ripemd160 pure|viper COUNT
    ... micropython bench/wallet_instructions.py pystone PYSTONE_PY LOOPS

The unix port has no cycle counter; callgrind counts the host instructions executed while
collection is on, deterministic whatever the machine's load. Collection is toggled by the C
function filter_iternext: only the work run inside `list(filter(step, (0,)))` counts (neither
the wallet nor the core call filter()).
wallet: the wallet of bench/wallet_micropython.py (same scripted world) pays PAYMENTS times;
its App.step() calls count from payment SKIP on (the world's own work does not). The file I/O of
its storage counts too (MicroPython's stream layer and libc in user space; not the kernel):
LittleFS on a board costs CPU as well. "pure": RIPEMD-160 without the viper code.
pystone: LOOPS of pystone 1.2 (CPython's Lib/test/pystone.py, any copy): instructions a pystone
on this port, to project instructions to an ESP32's pystones/s.
ripemd160: COUNT hashes of 32 bytes (a token: the wallet's hash160) by one implementation.
"""

import sys

sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("bench")]

from amiko_core import hashing  # noqa: E402


def counted(fn):
    def step(_):
        fn()
        return False

    list(filter(step, (0,)))


def wallet(root, payments, skip):
    from amiko_core import messages as m
    from amiko_core import walletlink as wl
    from wallet.app import App
    from wallet_world import FakeBoard, Provider, World, provision_msg

    board = FakeBoard(root)
    app = App(board, timeouts={"receipt": 2, "confirm": 5, "routing": 6, "locking": 3})
    provider = Provider(balance=10 ** 9)

    def run_until(world, done, count):
        for _ in range(2000):
            if count:
                counted(app.step)
            else:
                app.step()
            sent = board.serial.sent
            board.serial.sent = []
            if world is not None:
                for data in sent:
                    world.from_wallet(data)
                for data in world.take():
                    board.serial.inbox.extend(data)
            if done():
                return
        raise RuntimeError("the payment did not finish")

    board.serial.inbox.extend(m.to_frame(provision_msg(limit=5000, daily=10 ** 9, auto=1000, auto_count=65535,
                                                       auto_total=10 ** 9, auto_new=65535)))
    run_until(None, lambda: app.wallet.provisioned(), False)
    for i in range(payments):
        world = World(amount=500, provider=provider, token=bytes([(i % 250) + 1]) * 32, payment_id="pay-%d" % i)
        board.serial.inbox.extend(m.to_frame(m.Message(wl.TAP, url="amikopay://127.0.0.1:4001/pay-%d" % i)))
        run_until(world, lambda: app.wallet.state["pay"] is None and app.wallet.state["hist"] == i + 1, i >= skip)
        if not world.done or world.done[-1].state != wl.COMMITTED:
            raise RuntimeError("payment %d not committed" % i)


def main():
    if sys.argv[1] == "pystone":
        src = open(sys.argv[2]).read().replace("if __name__ == '__main__':", "if False:")
        g = {"__name__": "pystone"}
        exec(src, g)
        loops = int(sys.argv[3])
        counted(lambda: g["pystones"](loops))
    elif sys.argv[1] == "wallet":
        if sys.argv[5:] == ["pure"]:
            hashing._viper = None
        wallet(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        fn = hashing.ripemd160_pure if sys.argv[2] == "pure" else hashing.ripemd160_viper
        data = bytes(range(32))
        n = int(sys.argv[3])
        fn(data)

        def hashes():
            for _ in range(n):
                fn(data)

        counted(hashes)


main()
