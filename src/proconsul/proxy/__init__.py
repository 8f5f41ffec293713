"""The built-in sidecar proxy: an ADS client of the agent that carries out
Envoy's xDS (DESIGN.md, "The built-in sidecar proxy")."""
