"""`amiko demo`: a small network on this machine, a virtual wallet on USB serial, the bridge and its page.

network.py     the nodes (provider, hop1.., meeting point, shop) of a route of N hops, links, channels, the bridge
wallet_tap.py  the customer's wallet: a virtual board flashed (`amiko flash`), provisioned and topped up
run.py         the command: sales through the bridge's API, the bridge's timeline, --once --json
"""


def commands():
    from amiko.demo import run

    return run.commands()
