"""Fixtures of the bridge tests: a real shop network, the bridge process, Debian's chromium."""

import os
import shutil
import tempfile

import pytest


from amiko_testing.bridges import Shop  # noqa: E402
from amiko_testing.network import Net  # noqa: E402

CHROMIUM = os.environ.get("AMIKO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def shop_net(tmp_path):
    net = Net(tmp_path)
    shop = None
    try:
        shop = Shop(net, tmp_path, 'transports = []\n[timeouts]\nwaiting = 60\n')
        yield shop
    finally:
        if shop is not None:
            shop.close()
        net.close()


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (never a downloaded browser).

    Module scope, not session: Playwright's sync API keeps an asyncio loop running in this
    thread while it lives, and every later asyncio.run() in the session would fail."""
    if not os.path.exists(CHROMIUM):
        raise AssertionError("no chromium at %s: `make test` installs it (apt-get install chromium)" % CHROMIUM)
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="amiko-chromium-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, has_touch=True,
            viewport={"width": 800, "height": 480})  # a fresh profile dir: Playwright passes --user-data-dir
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
