"""The lab: the walkthrough's four-node cluster on one machine, and `doctor`.

`lab/` sits at the CLI's rank: it writes files, runs `proconsul` verbs as
subprocesses and reads agents over HTTP, but never imports the agent itself.
"""
