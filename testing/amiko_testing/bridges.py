"""The bridge tests' harness: `amiko bridge` as a real process on a real shop network."""

import json
import secrets
import subprocess
import urllib.request
from pathlib import Path

from playwright.sync_api import expect

from amiko import processes
from amiko_testing.network import amiko_argv, amiko_env, free_port, run_amiko

SHOTS = "/tmp/amiko-page-%s.png"


def sign_in(page, code, name="test till"):
    """Type a pairing code at the page's sign-in form, as the cashier does."""
    expect(page.locator("#code")).to_be_visible()
    page.locator("#code").fill(code)
    page.locator("#name").fill(name)
    page.locator("#pair").tap()


def open_page(browser, bridge, width=800, height=480):
    """The cashier page of a BridgeProcess in a new tab, signed in (paired with a fresh code when
    this browser is not yet)."""
    page = browser.new_page()
    page.set_viewport_size({"width": width, "height": height})
    page.set_default_timeout(15000)
    page.goto(bridge.url)
    if page.url.endswith("/login"):
        sign_in(page, bridge.pair())
        page.wait_for_url(bridge.url)
    expect(page.locator("#live")).to_have_text("live")
    return page


def enter_sale(page, digits, receipt):
    for d in digits:
        page.locator('button[data-key="%s"]' % d).tap()
    expect(page.locator("#amount")).to_have_text("{:,}".format(int(digits)))
    page.locator("#receipt").fill(receipt)
    page.locator("#charge").tap()


class BridgeProcess:
    """`amiko bridge` as a child process; .url is its page."""

    def __init__(self, tmp, node_home, config_text=""):
        self.port = free_port()
        Path(tmp).mkdir(parents=True, exist_ok=True)
        self.config = Path(tmp) / "bridge.toml"
        self.token = secrets.token_urlsafe(32)  # the tests' scripts use the API with it
        self.config.write_text('node = "%s"\nlisten = "127.0.0.1:%d"\nshop_name = "Test shop"\ncashier_token = "%s"\n%s'
                               % (node_home, self.port, self.token, config_text))
        self.stderr_path = Path(tmp) / "bridge.stderr"
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(amiko_argv() + ["bridge", "--config", str(self.config), "--json"],
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=amiko_env())
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("bridge did not start:\n%s" % self.stderr_tail())
        self.info = json.loads(line)
        self.url = self.info["url"]
        self.pairing_code = self.info["pairing_code"]

    def pair(self):
        """A fresh pairing code, as the shop gets it on the terminal (`amiko bridge pair`)."""
        r = run_amiko(["bridge", "pair", "--config", self.config, "--json"], timeout=30)
        assert r.returncode == 0, r
        return r.json["code"]

    def api(self, path, body=None, timeout=10):
        """The page's API as a script uses it (with the config's cashier_token)."""
        req = urllib.request.Request(self.url + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + self.token})
        return json.loads(urllib.request.urlopen(req, timeout=timeout).read())

    def stderr_tail(self, n=40):
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no stderr)"

    def stop(self, timeout=10):
        if not processes.stop(self.proc, timeout):
            raise AssertionError("bridge did not stop within %s s of SIGTERM:\n%s" % (timeout, self.stderr_tail()))
        self._stderr.close()
        return self.proc.returncode


class Shop:
    """payer --channel--> shop (the shop node is the meeting point) and the bridge on the shop node."""

    def __init__(self, net, tmp_path, bridge_config=""):
        self.net = net
        self.shop = net.node("shop", meeting_points=["mp-shop"])
        self.payer = net.node("payer")
        net.connect(self.shop, self.payer)
        net.deposit(self.payer, self.shop, 100000)
        self.bridge = BridgeProcess(tmp_path, self.shop.home, bridge_config)

    def pay(self, url, timeout=30):
        """The payer node pays an amikopay URL (a real payment through real nodes)."""
        return self.payer.run("pay", url, "--yes", "--timeout", timeout, timeout=timeout + 30)

    def close(self):
        self.bridge.stop()
