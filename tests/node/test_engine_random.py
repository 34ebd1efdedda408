"""Random networks and payment sets (hypothesis) over the simulator, some payments cancelled
by an endpoint at a random moment before lock: every payment ends committed everywhere or
cancelled everywhere, money is conserved, nothing is left held, no honest message refused."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import Sim


@st.composite
def scenarios(draw):
    n = draw(st.integers(2, 8))
    edges = set()
    for i in range(1, n):  # a spanning tree, then chords that close cycles
        edges.add((draw(st.integers(0, i - 1)), i))
    for a, b in draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=n)):
        if a != b:
            edges.add((min(a, b), max(a, b)))
    funds = {e: (draw(st.integers(0, 300)), draw(st.integers(0, 300))) for e in sorted(edges)}
    mp = draw(st.integers(0, n - 1))
    payments = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.integers(1, 150),
                                       st.one_of(st.none(), st.integers(0, 80))),  # cancel at step k
                             min_size=1, max_size=10))
    seed = draw(st.integers(0, 2**32 - 1))
    return n, funds, mp, payments, seed


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(sc=scenarios())
def test_random_networks_end_every_payment_cleanly(tmp_path_factory, sc):
    n, funds, mp, payments, seed = sc
    sim = Sim(tmp_path_factory.mktemp("net"), seed=seed)
    try:
        nodes = [sim.node("n%d" % i, ["mp"] if i == mp else [], external_meeting_points=["mp"]) for i in range(n)]
        for (a, b), (ab, ba) in funds.items():
            sim.link(nodes[a], nodes[b])
            if ab:
                sim.deposit(nodes[a], nodes[b], ab)
            if ba:
                sim.deposit(nodes[b], nodes[a], ba)
        sim.run()
        before = sim.balances()
        ps = [sim.pay(nodes[a], nodes[b], amount) for a, b, amount, _ in payments]
        cancels = sorted((k, i) for i, (_, _, _, k) in enumerate(payments) if k is not None)
        steps = 0
        while sim.step():
            steps += 1
            while cancels and cancels[0][0] <= steps:
                p = ps[cancels.pop(0)[1]]
                if not p.locked and not p.cancelled:  # an endpoint cancels before lock
                    sim.cancel(p, "cancelled by the user")
            assert steps < 100000

        assert sim.errors == []
        sim.check_quiet()
        expected = dict(before)
        for p in ps:
            entries = []
            for node in nodes:
                entries += node.query("SELECT state FROM routes WHERE txid = ?", (p.txid,))
            states = {e[0] for e in entries}
            rows = [p.payer.query("SELECT state FROM payments WHERE txid = ? AND role = 'payer'", (p.txid,))[0][0],
                    p.payee.query("SELECT state FROM payments WHERE txid = ? AND role = 'payee'", (p.txid,))[0][0]]
            if p.done:
                assert p.failed == [] and rows == ["committed", "committed"]
                assert "rolled_back" not in states and "settled" in states
                expected[p.payer.name] -= p.amount
                expected[p.payee.name] += p.amount
            else:
                assert p.failed or p.cancelled, "payment neither committed nor cancelled"
                assert rows == ["cancelled", "cancelled"]
                assert "settled" not in states and "locked" not in states
        assert sim.balances() == expected
        assert sum(expected.values()) == sum(before.values())
    finally:
        sim.close()
