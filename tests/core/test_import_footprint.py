"""Heap each core module keeps after import on MicroPython, loaded from .mpy (the deployed form).

The modules are imported one at a time in dependency order in a fresh unix-port process
(64-bit); the figure is gc.mem_alloc() after gc.collect(), before and after the import.
It includes the qstr pool growth the import triggers (pools double: 20, 40, 80, 160, then
320 entries, so the step lands on whichever module crosses the threshold; the exchange's
modules stay under 300 interned names so that the 320-entry pool, 3.5 KiB in one piece,
is never needed on the payment path). BUDGETS are the measured values plus ~20% so a
regression is caught; lower them when a module shrinks.

Measured (bytes): errors 2592, cbor 6496, frame 6912, ids 1600, hashing 4096,
token 3488, messages 9856, paylink 12736 (the exchange's modules: 47776 together; paylink
was 10560 and messages 9280 before the machines' transition table, Effect objects and the
one reason-cutting function, issue 15);
hashing 5184 since issue 13 (was 4096: the viper RIPEMD-160, amiko_core.ripemd160_viper, and its
preallocated work area; bytes traded for no garbage per hash and about a tenth of the instructions);
url 13536 (not needed by the payment link: messages must not import it; it crosses into
the fifth qstr pool, about 3.5 KiB of its figure), linkschema 7744 (the node-link
schema, register() and the kind helpers; loaded on first use, never by the exchange).
Before the node-link schema moved to linkschema and paylink was slimmed: errors 2496,
cbor 6880, frame 7360, ids 1312, hashing 4288, token 3488, messages 15648, paylink 16480
(57952 together), url 9952. Before issue 2's heap work (messages importing url, hashing's
step tables built from int tuples): errors 2624, cbor 6496, frame 7424, hashing 7200,
token 1568, url 12544, messages 20352 (32896 with url), paylink 12960; 71 KiB together.
"""

from amiko_testing.micropython import ROOT, compile_to_mpy, run_micropython

ORDER = ("errors", "cbor", "frame", "ids", "hashing", "token", "messages", "paylink", "url", "linkschema")
EXCHANGE = ORDER[:8]  # what the payment link exchange loads
BUDGETS = {
    "errors": 3000,
    "cbor": 7800,
    "frame": 8400,
    "ids": 1900,
    "hashing": 6200,
    "token": 4200,
    "messages": 11200,
    "paylink": 12800,
    "url": 16300,
    "linkschema": 9300,
}
EXCHANGE_MODULES_BUDGET = 54000  # sum over EXCHANGE

SCRIPT = """
import gc, sys
for name in %r:
    gc.collect()
    before = gc.mem_alloc()
    __import__("amiko_core." + name)
    gc.collect()
    print("footprint", name, gc.mem_alloc() - before)
    if name == "paylink":
        print("url loaded by the exchange modules:", "amiko_core.url" in sys.modules)
        print("linkschema loaded by the exchange modules:", "amiko_core.linkschema" in sys.modules)
""" % (ORDER,)


def test_import_footprint_from_mpy(tmp_path):
    assert compile_to_mpy(ROOT / "shared" / "amiko_core", tmp_path)
    result = run_micropython(["-c", SCRIPT], [tmp_path])
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "url loaded by the exchange modules: False" in result.stdout
    assert "linkschema loaded by the exchange modules: False" in result.stdout
    got = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["footprint"]:
            got[parts[1]] = int(parts[2])
    assert list(got) == list(ORDER), result.stdout
    over = {name: (got[name], BUDGETS[name]) for name in ORDER if got[name] > BUDGETS[name]}
    assert not over, "import footprint over budget (bytes, budget): %r" % over
    exchange = sum(got[name] for name in EXCHANGE)
    assert exchange <= EXCHANGE_MODULES_BUDGET, exchange
