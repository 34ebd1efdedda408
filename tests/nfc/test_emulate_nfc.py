"""`amiko emulate --nfc HOST:PORT`: the virtual board boots with a simulated PN532 (HW_DIR/pn532 ->
its UART, opened by the ROM as _vboard.pn532), the firmware's card answers nfcpy's reader."""

import json
import subprocess

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl

from amiko.transports import open_transport
from amiko.transports.nfc import Reader

from amiko_testing.network import amiko_argv, amiko_env
from amiko_testing.nfc import free_udp_port, wait
from amiko_testing.wallets import flash_firmware


def test_emulate_with_nfc(tmp_path):
    flash_firmware(tmp_path / "flash")
    port = free_udp_port()
    proc = subprocess.Popen(amiko_argv() + ["emulate", "--home", str(tmp_path), "--nfc", "127.0.0.1:%d" % port,
                                            "--json"], stdout=subprocess.PIPE, text=True, env=amiko_env())
    reader = None
    try:
        info = json.loads(proc.stdout.readline())
        assert info["nfc"]["transport"] == "nfc:udp:127.0.0.1:%d" % port, info
        assert str((tmp_path / "hw" / "pn532").resolve()) == info["nfc"]["uart"]
        t = open_transport(info["nfc"]["transport"])
        reader = t.reader
        wait(lambda: reader.stats["contacts"] >= 1, 20, "the wallet selected over NFC")
        assert reader.stats["not_wallet"] == 0
        t.write(b"\xa5\x4b garbage that is no frame")  # the wallet answers with a clear error frame
        dec = frame.FrameDecoder(4096)
        got = wait(lambda: dec.feed(t.read_blocking(0.2)), 10, "the wallet's answer")
        msg = m.from_frame(got[0])
        assert msg.type == wl.REFUSED_MSG and not t.contact.gone, msg
        t.close()
    finally:
        if reader is not None:
            Reader._readers.pop(reader.path, None)
            reader.close(wait=0.5)
        proc.terminate()
        proc.wait(10)
