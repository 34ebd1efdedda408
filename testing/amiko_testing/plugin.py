"""pytest plugin of amiko_testing (tests/conftest.py loads it): each test item learns its
outcome, so teardown checks (amiko_testing.leaks) run only after a test that passed."""

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.amiko_passed = report.passed
    return report
