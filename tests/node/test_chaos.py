"""The short chaos storm (amiko_testing.chaos): payments while nodes are SIGKILLed and
restarted and links dropped; every invariant must hold. The long storm is bench/chaos.py."""

import pytest

from amiko_testing.chaos import run_storm


@pytest.mark.slow
def test_short_storm_keeps_every_invariant(tmp_path):
    result = run_storm(tmp_path, nodes=6, payments=40, duration=14.0, seed=7, kill_every=3.5, drop_every=1.5,
                       stall_every=3.0, settle_timeout=90)
    assert result["kills"] >= 3 and result["drops"] >= 5 and result["stalls"] >= 3, result
    assert result["violations"] == [], result
    assert result["summary"]["committed"] > 0, result
    # every payment whose request was made is accounted for by the nodes (a request whose
    # answer was lost with a killed node may exist too)
    no_request = result["client_views"].get("no request", 0)
    assert result["payments"] - no_request <= sum(result["summary"].values()) <= result["payments"], result
