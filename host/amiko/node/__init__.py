"""The Amiko node daemon: links, channels, routing, payments (see notes/node_design.md)."""
