"""The xDS side of the mesh: proxy snapshots, their Envoy resources, and the ADS server.

How the parts fit: DESIGN.md, "xDS".
"""
