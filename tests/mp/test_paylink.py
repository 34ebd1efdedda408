"""The payment-link scenarios (tests/vectors/paylink.json) on MicroPython."""

import mptest
import paylink_driver


def test_scenarios():
    vectors = mptest.vectors("paylink")
    mptest.eq(len(vectors["scenarios"]) >= 30, True, "scenario count")
    failures = paylink_driver.run_all(vectors)
    if failures:
        raise AssertionError("\n".join(failures))


def test_driver_detects_a_wrong_expectation():
    vectors = mptest.vectors("paylink")
    scenario = vectors["scenarios"][0]
    scenario["steps"][0]["effects"][-1] = ["timer", 11]
    mptest.eq(len(paylink_driver.run_all({"defaults": vectors["defaults"], "scenarios": [scenario]})), 1, "failures")


def test_exchange_through_frames():
    token = mptest.unhex(mptest.vectors("paylink")["defaults"]["token"])
    result = paylink_driver.exchange_through_frames(token, chunk=3)
    mptest.eq(result["outcomes"], {"payer": "committed", "payee": "committed"}, "outcomes")
    mptest.eq(result["frames"], ["Pay", "Receipt", "Confirm", "HavePayeeRoute", "Commit"], "frames")
    mptest.eq(result["payer"].token, token, "payer token")
