"""Consul's DNS interface: names -> catalog answers over UDP and TCP.

Pure parts: `query` (decode a query), `core` (classify a name, build records
from catalog rows), `render` (encode with dnslib, trim to size), `cache`
(wire-format answers per catalog index). Adapter: `server` (asyncio listeners,
recursors, counters). The agent starts it through `agent/dns_setup.py`.
"""
