"""Connect (service mesh) cores: the CA's certificates and the rows that describe them."""
