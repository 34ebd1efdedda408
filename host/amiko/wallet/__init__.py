"""Host-side tools for wallets: provisioning, top-up, history (`amiko wallet ...`)."""
