"""The herd: asyncio TCP servers that flood client locations to each other."""
