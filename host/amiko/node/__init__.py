"""The Amiko node daemon: links, channels, routing, payments (see ARCHITECTURE.md at the repository root)."""
