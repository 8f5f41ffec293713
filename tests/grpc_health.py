"""A real gRPC server answering grpc.health.v1.Health/Check from a table,
for the gRPC and HTTP/2 ping checks' tests (grpcio speaks HTTP/2 cleartext)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

SERVING, NOT_SERVING = 1, 2


@contextlib.contextmanager
def health_server(statuses: dict[str, int], *, tls: tuple[str, str] | None = None) -> Iterator[str]:
    """Serve `statuses` (service name -> status; "" is the server) on 127.0.0.1,
    over TLS with `tls` (certificate file, key file); yields `host:port`. An
    unknown service is NOT_FOUND."""

    def check(request: bytes, context: grpc.ServicerContext) -> bytes:
        service = request[2:].decode() if request else ""
        if service not in statuses:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return b"\x08" + bytes([statuses[service]])

    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}
    )
    server = grpc.server(ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((handler,))
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        cert, key = (Path(name).read_bytes() for name in tls)
        credentials = grpc.ssl_server_credentials([(key, cert)])
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)
