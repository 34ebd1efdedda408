"""The shop terminal's bridge: `amiko bridge --config FILE` (see amiko.bridge.config for the file).

Parts: sale.py (sans-IO sale state machine), config.py, nodeclient.py (shop node control
client), wallets.py (the seam to the relay and its transports), service.py (Bridge: the
machine wired to node, wallets and clock), web.py + static/ (the cashier's page), run.py
(the process: page server, signals).
"""


def commands():
    from amiko.bridge import run

    return run.commands()
