"""Connect (service mesh) cores: the CA's certificates (`ca`), the rules of the
config entry kinds (`config_entries`), intentions (`intentions`) and the
discovery chain compiler (`discovery_chain`). The rows they read and produce
are plain data in `structs/connect.py`, `structs/config_entries.py` and
`structs/discovery_chain.py`."""
