"""The teardown check that no payment state leaked (pyln-testing checks for stuck HTLCs alike).

A route still pending after both its deadlines passed is state the timers should have ended:
every payment ends by its deadline, whatever the peers did. Checked on every node still
running when a test that passed tears its net down. Also: no node logged a SCHEMA VIOLATION
(a control answer or notification outside schemas/control/, which the client may not see)."""

import time

GRACE = 10.0  # seconds past a deadline before a pending route counts as leaked


def stale_routes(status, now=None, grace=GRACE):
    """The pending routes of one node's status whose deadlines all lie more than grace seconds
    in the past."""
    now = time.time() if now is None else now
    stale = []
    for route in status.get("pending", ()):
        deadlines = [d for d in (route.get("up_deadline"), route.get("down_deadline")) if d]
        if deadlines and max(deadlines) + grace < now:
            stale.append(route)
    return stale


def check_nodes(nodes, grace=GRACE):
    """Raise AssertionError naming each running node's leaked routes."""
    leaked = {}
    for node in nodes:
        if not node.running():
            continue
        stale = stale_routes(node.rpc("status"), grace=grace)
        if stale:
            leaked[node.name] = stale
    assert not leaked, "payment state outlived its deadline: %r" % leaked


def check_schema_logs(nodes):
    """Raise AssertionError quoting each node's SCHEMA VIOLATION log lines."""
    found = {}
    for node in nodes:
        try:
            lines = (node.home / "node.log").read_text(errors="replace").splitlines()
        except OSError:
            continue
        bad = [line for line in lines if "SCHEMA VIOLATION" in line]
        if bad:
            found[node.name] = bad
    assert not found, "control calls outside the schemas: %r" % found
