"""The terminal's relay between a wallet and the network (see core)."""
