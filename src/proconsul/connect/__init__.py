"""Connect (service mesh) cores: the CA's certificates. The rows that describe
them are plain data in `structs/connect.py`."""
