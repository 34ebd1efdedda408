"""The seam between the bridge and the wallets: what the bridge needs from the relay.

The relay core (host/amiko/relay/, with transport adapters in host/amiko/transports/) moves
a wallet's frames to the shop node's payment link and to the wallet's provider. The bridge
only tells it which sale is on offer and hears what the wallet does:

    port = open_wallet_port(transports, events)   # transports: ["serial:/dev/ttyACM0", ...]
    await port.start()
    port.offer(sale_id, url)      # a sale waits: a wallet that is or gets connected is sent this amikopay URL
    port.rearm()                  # no sale on offer: a wallet that connects is told none is pending
    port.cancel(sale_id, reason)  # the sale was cancelled here: end its payment link (Cancel) if it started
    await port.close()

events (an object given by the bridge; each method returns nothing and must not block):
    events.wallet_arrived(transport)        a wallet made contact ("serial:/dev/ttyACM0")
    events.wallet_confirming()              the receipt reached the wallet; the customer is asked
    events.wallet_declined(reason)          the wallet said no (Cancel on the payment link)
    events.wallet_left(transport)           the wallet went away (unplugged, out of range)

amiko.bridge.relayport.RelayPort implements this port over the relay core
(amiko.relay.core.Relay) and amiko.transports. Without transports (or without the relay)
open_wallet_port returns NoWallets: the page still works with the QR code (any payer can pay
the amikopay URL), and the bridge logs that wallets over `transports` are not served.
"""

import importlib
import logging

log = logging.getLogger("amiko.bridge")


class NoWallets:
    """No transports (or no relay): sales are paid through the QR code / URL only."""

    def __init__(self, transports=(), why=None):
        self.transports = list(transports)
        self.why = why

    async def start(self):
        if self.transports and self.why:
            log.warning("wallets on %s are not served: %s", ", ".join(self.transports), self.why)

    def offer(self, sale_id, url):
        pass

    def rearm(self):
        pass

    def cancel(self, sale_id, reason):
        pass

    async def close(self):
        pass


def open_wallet_port(transports, events, node_address=None, providers=None):
    """The port for these transports: amiko.relay.open_bridge_port if the relay package offers
    one, else the bridge's own RelayPort over amiko.relay.core (amiko.bridge.relayport), else
    NoWallets when there are no transports or no relay. providers: the
    amiko.relay.policy.ProviderPolicy the relay connects by (None: any provider)."""
    if not transports:
        return NoWallets()
    try:
        relay = importlib.import_module("amiko.relay")
    except ImportError as e:
        return NoWallets(transports, "the relay (amiko.relay) is not available: %s" % e)
    factory = getattr(relay, "open_bridge_port", None)
    if factory is not None:
        return factory(transports, events, node_address=node_address, providers=providers)
    try:
        from amiko.bridge.relayport import RelayPort
    except ImportError as e:
        return NoWallets(transports, "the relay core (amiko.relay.core) is not available: %s" % e)
    return RelayPort(transports, events, providers=providers)
