"""Inbound media copied out of Meta's CDN (docs/media.md): what a file is (`sniff`), where we may fetch
it from and how (`fetch`, streamed and capped), and where the copies live (`storage`: one port, two
adapters)."""
