"""Proconsul: service discovery and a service mesh that works the way Consul works."""

__version__ = "0.1.0"
# The Consul release whose behaviour we follow; reported where Consul reports its own version.
CONSUL_COMPAT_VERSION = "1.16.0"
