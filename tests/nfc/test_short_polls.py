"""The reader's polls on nfcpy's udp link wait SENS_RES_WAIT for a card, not the driver's 1 s
(a card entering the field during an unanswered poll waited out that second: the old ~1 s arrival)."""

import nfc.clf
from nfc.clf import udp

from amiko.transports import nfc as amiko_nfc


def test_an_unanswered_poll_waits_only_sens_res_wait_and_the_rest_keeps_its_waits():
    dev = udp.Device("127.0.0.1", 54399)  # nothing listens: the recv is replaced
    waits = []

    def recv(timeout, *brty):
        waits.append(timeout)
        raise nfc.clf.TimeoutError("no card")

    dev._recv_data = recv
    amiko_nfc._short_polls(dev)
    try:
        assert dev.sense_tta(nfc.clf.RemoteTarget("106A")) is None
        assert waits == [amiko_nfc.SENS_RES_WAIT] and amiko_nfc.SENS_RES_WAIT < 0.1
        # outside a poll (an exchange with an activated card) the driver's own time-out stands
        try:
            dev._recv_data(0.5, "106A")
        except nfc.clf.TimeoutError:
            pass
        assert waits[-1] == 0.5
    finally:
        dev.close()


def test_other_devices_are_left_alone():
    class Other:
        def sense_tta(self, target):
            return "as is"

    d = Other()
    amiko_nfc._short_polls(d)
    assert d.sense_tta(None) == "as is" and "sense_tta" not in vars(d)
