"""The one transport of every TCP connection: BOLT 8 (noise: sans-IO; stream: asyncio)."""
