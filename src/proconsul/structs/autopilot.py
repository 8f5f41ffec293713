"""The autopilot configuration as it is replicated through Raft (Consul's
`AutopilotConfig`), and the command that sets it.

Durations travel as Go strings (`200ms`, `10s`), as Consul's API writes them;
they were parsed and checked before the command entered the log. A field the
writer left out is its zero value, as in Consul's PUT.
"""

from __future__ import annotations

import msgspec

from proconsul.structs.naming import pascal


class AutopilotSettings(msgspec.Struct, rename=pascal):
    cleanup_dead_servers: bool = False
    last_contact_threshold: str = "0s"
    max_trailing_logs: int = 0
    min_quorum: int = 0
    server_stabilization_time: str = "0s"
    redundancy_zone_tag: str = ""
    disable_upgrade_migration: bool = False
    upgrade_version_tag: str = ""
    create_index: int = 0
    modify_index: int = 0
