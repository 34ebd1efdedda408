"""Cost of the BOLT 8 transport (issue 11). Run: .venv/bin/python bench/handshake.py [N]

- handshake over real sockets on 127.0.0.1: amiko.wire.stream connect() against accept(),
  median of N, both ends in one process (so the figure is both sides' CPU plus loopback);
- the same three-act handshake in memory (amiko.wire.noise, no I/O), its keys on
  libsecp256k1 (coincurve, as shipped) and on the pure-Python `ecdsa` package;
- raw ECDH, sign and verify, coincurve against ecdsa.

Writes its section of bench/RESULTS.md. Keep N to a few hundred: the machine is shared.
"""

import asyncio
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]

import ecdsa  # noqa: E402
from ecdsa.util import sigdecode_string, sigencode_string_canonize  # noqa: E402

from amiko.node.identity import Identity, verify  # noqa: E402
from amiko.wire import noise, stream  # noqa: E402
from results_file import write_section  # noqa: E402

CURVE = ecdsa.SECP256k1


class EcdsaKeypair:
    """noise's key interface (pubkey, ecdh_compressed) on the pure-Python ecdsa package."""

    def __init__(self):
        self._key = ecdsa.SigningKey.generate(curve=CURVE, hashfunc=hashlib.sha256)
        self.pubkey = self._key.get_verifying_key().to_string("compressed")

    def ecdh_compressed(self, pubkey):
        point = ecdsa.VerifyingKey.from_string(pubkey, curve=CURVE).pubkey.point * self._key.privkey.secret_multiplier
        return hashlib.sha256(bytes([2 + (point.y() & 1)]) + point.x().to_bytes(32, "big")).digest()


def median_ms(samples):
    return statistics.median(samples) * 1000


def time_each(fn, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def handshake_in_memory(make_key):
    ini_static, resp_static = make_key(), make_key()

    def once():
        ini = noise.Initiator(ini_static, resp_static.pubkey, ephemeral=make_key())
        resp = noise.Responder(resp_static, ephemeral=make_key())
        resp.read_act_three(ini.read_act_two(resp.read_act_one(ini.act_one())))

    return once


async def handshakes_over_sockets(n):
    a, b = Identity.generate(), Identity.generate()
    accepted = asyncio.Queue()

    async def on_conn(reader, writer):
        await accepted.put(await stream.accept(reader, writer, b))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    samples = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            client = await stream.connect("127.0.0.1", port, a, b.pubkey)
            srv = await accepted.get()  # the responder has checked act three
            samples.append(time.perf_counter() - t0)
            client.abort()
            srv.abort()
    finally:
        server.close()
    return samples


def raw_ops(n):
    ident, peer = Identity.generate(), Identity.generate()
    ref = ecdsa.SigningKey.generate(curve=CURVE, hashfunc=hashlib.sha256)
    ref_peer = ecdsa.SigningKey.generate(curve=CURVE, hashfunc=hashlib.sha256).get_verifying_key()
    data = os.urandom(100)
    sig = ident.sign(data)
    ref_sig = ref.sign_deterministic(data, hashfunc=hashlib.sha256, sigencode=sigencode_string_canonize)
    ref_vk = ref.get_verifying_key()

    def ref_ecdh():
        e = ecdsa.ECDH(curve=CURVE, private_key=ref, public_key=ref_peer)
        hashlib.sha256(e.generate_sharedsecret_bytes()).digest()

    rows = [
        ("ECDH", lambda: ident.ecdh(peer.pubkey), ref_ecdh),
        ("sign", lambda: ident.sign(data),
         lambda: ref.sign_deterministic(data, hashfunc=hashlib.sha256, sigencode=sigencode_string_canonize)),
        ("verify", lambda: verify(ident.pubkey, data, sig),
         lambda: ref_vk.verify(ref_sig, data, hashfunc=hashlib.sha256, sigdecode=sigdecode_string)),
    ]
    return [(name, median_ms(time_each(cc, n)), median_ms(time_each(py, n))) for name, cc, py in rows]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    n_slow = max(20, n // 5)  # ecdsa is slow; fewer rounds keep the run short
    sockets = asyncio.run(handshakes_over_sockets(n))
    mem_cc = time_each(handshake_in_memory(noise.Keypair), n)
    mem_py = time_each(handshake_in_memory(EcdsaKeypair), n_slow)
    ops = raw_ops(n)
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    lines = [
        "Machine: `%s`, nproc %s, Python %s." % (uname, nproc, platform.python_version()),
        "",
        "| BOLT 8 handshake (3 acts, both sides) | runs | median ms | p90 ms |",
        "|---|---|---|---|",
        "| real sockets on 127.0.0.1, connect() + accept(), coincurve | %d | %.2f | %.2f |"
        % (n, median_ms(sockets), statistics.quantiles(sockets, n=10)[-1] * 1000),
        "| in memory (amiko.wire.noise), keys on coincurve | %d | %.2f | %.2f |"
        % (n, median_ms(mem_cc), statistics.quantiles(mem_cc, n=10)[-1] * 1000),
        "| in memory (amiko.wire.noise), keys on pure-Python ecdsa | %d | %.2f | %.2f |"
        % (n_slow, median_ms(mem_py), statistics.quantiles(mem_py, n=10)[-1] * 1000),
        "",
        "| operation | coincurve (libsecp256k1) ms | ecdsa (pure Python) ms | ratio |",
        "|---|---|---|---|",
    ]
    for name, cc, py in ops:
        lines.append("| %s | %.4f | %.3f | %.0fx |" % (name, cc, py, py / cc))
    lines += [
        "",
        "Each handshake does 3 ECDH per side plus one key generation per side; the socket figure "
        "includes TCP connect and both ends' work in one process. Raw operations: median of %d." % n,
    ]
    body = "\n".join(lines)
    print(body)
    write_section("BOLT 8 handshake and secp256k1 cost (issue 11)", ".venv/bin/python bench/handshake.py %d" % n, body)


if __name__ == "__main__":
    main()
