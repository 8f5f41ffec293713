"""The HTTP client behind every CLI verb that talks to an agent's HTTP API.

Job: turn Consul's API flags and environment variables into one connection
setting, send requests, and turn failures into the text Consul's CLI prints.
Also holds the small helpers those verbs share: argument checking with hints,
Go-columnize-style tables, and the error-to-exit-code wrapper.

Rules:
- stdlib only (`http.client`, `ssl`, `socket`): the CLI must start fast, so
  nothing here imports aiohttp or the agent.
- Flags beat environment variables; environment variables beat defaults
  (`127.0.0.1:8500`, plain HTTP, no token).
- Error text reads like Go's net/http errors because scripts and people grep
  for it: `Put "http://127.0.0.1:8500/v1/kv/a": dial tcp 127.0.0.1:8500:
  connect: connection refused` and `Unexpected response code: 403 (Permission
  denied)`. Each verb puts its own prefix in front (`Error reloading: ...`).
- Verbs print errors on stderr and exit 1 (`CliError` carries text and code).
- Secrets (tokens) are never echoed back, not even in usage hints.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import re
import socket
import ssl
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proconsul.config.flags import FlagError, FlagSet, parse_bool
from proconsul.structs.hostport import split_host_port

DEFAULT_HTTP_ADDR = "127.0.0.1:8500"
# A CLI call should never hang forever on a wedged agent; blocking queries are
# not used by these verbs, so a minute is generous.
REQUEST_TIMEOUT = 60.0
# Flags whose values are secrets: hints show `-token=...`, never the value.
SECRET_FLAGS = frozenset({"token"})


class CliError(Exception):
    """A failure the user sees as one message on stderr, then exit `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ApiError(Exception):
    """A failed HTTP call; str() is the Go-style text (`Unexpected response code: ...`)."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class HelpRequested(Exception):
    """`-h`/`-help` was given; the message is the usage text (printed on stdout, exit 0)."""


# --------------------------------------------------------------------------- flags


def add_api_flags(flags: FlagSet, *, server_options: bool = True) -> None:
    """Add Consul's common API options to a verb's flags.

    Every verb that talks to an agent takes all of them, as in Consul, so a
    script written for one verb (`-datacenter us-west-1`) works with any other.
    `server_options` is accepted from older call sites and changes nothing.
    """
    del server_options
    flags.string(
        "http-addr",
        None,
        "Address of the agent's HTTP API (host:port, http://, https:// or unix://). "
        "Also CONSUL_HTTP_ADDR. Default 127.0.0.1:8500.",
    )
    flags.string("token", None, "ACL token to use in the request. Also CONSUL_HTTP_TOKEN.")
    flags.string(
        "token-file",
        None,
        "File containing the ACL token; wins over -token. Also CONSUL_HTTP_TOKEN_FILE.",
    )
    flags.string("ca-file", None, "CA file for TLS to the agent. Also CONSUL_CACERT.")
    flags.string("ca-path", None, "Directory of CA certificates. Also CONSUL_CAPATH.")
    flags.string("client-cert", None, "Client certificate for TLS. Also CONSUL_CLIENT_CERT.")
    flags.string("client-key", None, "Client key for TLS. Also CONSUL_CLIENT_KEY.")
    flags.string("tls-server-name", None, "SNI host name for TLS. Also CONSUL_TLS_SERVER_NAME.")
    flags.string("datacenter", None, "Datacenter to query. Defaults to the agent's.")
    flags.boolean("stale", False, "Let any server answer, not only the leader.")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Endpoint:
    """Where the agent listens: `scheme` is http, https or unix."""

    scheme: str
    host: str  # host for TCP; the socket path for unix
    port: int

    @property
    def display(self) -> str:
        """The address as Go's dialer names it in errors (`127.0.0.1:8500`)."""
        if self.scheme == "unix":
            return self.host
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, path_and_query: str) -> str:
        """The full URL as Go prints it in errors."""
        if self.scheme == "unix":
            return f"http://unix{path_and_query}"
        return f"{self.scheme}://{self.display}{path_and_query}"


def parse_address(text: str, *, use_tls: bool = False) -> Endpoint:
    """Parse `host:port`, `http://host:port`, `https://host:port` or `unix:///path`.

    A bare `host:port` uses https when `use_tls` (CONSUL_HTTP_SSL) is set; an
    explicit scheme always wins. A missing port means the scheme's default.
    """
    text = text.strip()
    if text.startswith("unix://"):
        path = text[len("unix://") :]
        if not path:
            raise CliError(f"Error connecting to Consul agent: invalid unix address {text!r}")
        return Endpoint("unix", path, 0)
    scheme = "https" if use_tls else "http"
    rest = text
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", text)
    if match:
        scheme = match.group(1).lower()
        rest = match.group(2)
        if scheme not in ("http", "https"):
            raise CliError(f"Error connecting to Consul agent: unknown protocol scheme: {scheme}")
    rest = rest.split("/", 1)[0]
    if not rest:
        raise CliError(f"Error connecting to Consul agent: invalid address {text!r}")
    default_port = 443 if scheme == "https" else 80
    host, port = _split_host_port(rest, default_port, text)
    return Endpoint(scheme, host, port)


def _split_host_port(hostport: str, default_port: int, original: str) -> tuple[str, int]:
    try:
        host, port = split_host_port(hostport, default_port)
    except ValueError as exc:
        what = "invalid port in" if str(exc) == "invalid port" else "invalid"
        raise CliError(f"Error connecting to Consul agent: {what} address {original!r}") from None
    if port == 0:
        raise CliError(f"Error connecting to Consul agent: invalid port in address {original!r}")
    return host, port


@dataclass(frozen=True)
class ClientConfig:
    """Everything needed to reach the agent, resolved from flags and env."""

    endpoint: Endpoint
    token: str | None = None
    datacenter: str | None = None
    stale: bool = False
    verify: bool = True
    ca_file: str | None = None
    ca_path: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    tls_server_name: str | None = None
    timeout_s: float = REQUEST_TIMEOUT


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return parse_bool(text)
    except ValueError:
        raise CliError(f"Error connecting to Consul agent: invalid {name} value {text!r}") from None


def _read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise CliError(f"Error loading token file: {exc.strerror or exc}: {path}") from None


def load_config(values: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ClientConfig:
    """Resolve the connection settings: flag, then env var, then default."""
    env = os.environ if env is None else env

    def pick(flag: str, var: str) -> str | None:
        value = values.get(flag)
        if value:
            return str(value)
        return env.get(var) or None

    use_tls = _env_bool(env, "CONSUL_HTTP_SSL", False)
    endpoint = parse_address(
        pick("http-addr", "CONSUL_HTTP_ADDR") or DEFAULT_HTTP_ADDR, use_tls=use_tls
    )
    # Token precedence: -token-file, -token, then the same two from env.
    token: str | None
    if values.get("token-file"):
        token = _read_token_file(str(values["token-file"]))
    elif values.get("token"):
        token = str(values["token"])
    elif env.get("CONSUL_HTTP_TOKEN_FILE"):
        token = _read_token_file(env["CONSUL_HTTP_TOKEN_FILE"])
    else:
        token = env.get("CONSUL_HTTP_TOKEN") or None
    return ClientConfig(
        endpoint=endpoint,
        token=token or None,
        datacenter=values.get("datacenter") or None,
        stale=bool(values.get("stale")),
        verify=_env_bool(env, "CONSUL_HTTP_SSL_VERIFY", True),
        ca_file=pick("ca-file", "CONSUL_CACERT"),
        ca_path=pick("ca-path", "CONSUL_CAPATH"),
        client_cert=pick("client-cert", "CONSUL_CLIENT_CERT"),
        client_key=pick("client-key", "CONSUL_CLIENT_KEY"),
        tls_server_name=pick("tls-server-name", "CONSUL_TLS_SERVER_NAME"),
    )


# --------------------------------------------------------------------------- transport


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (`unix:///path` addresses)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _TLSConnection(http.client.HTTPConnection):
    """HTTPS whose SNI/verified name may differ from the dialled host (-tls-server-name)."""

    def __init__(
        self, host: str, port: int, timeout: float, context: ssl.SSLContext, server_name: str
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self._context = context
        self._server_name = server_name

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_name)


def _tls_context(config: ClientConfig) -> ssl.SSLContext:
    try:
        if config.verify:
            context = ssl.create_default_context(cafile=config.ca_file, capath=config.ca_path)
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if config.client_cert:
            context.load_cert_chain(config.client_cert, config.client_key)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"Error connecting to Consul agent: {_describe_os_error(exc)}") from None
    return context


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        return f"{text[:1].lower()}{text[1:]}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__


def _dial_error(endpoint: Endpoint, exc: BaseException) -> str:
    """Describe a failed connection the way Go's dialer does."""
    where = endpoint.display
    net = "unix" if endpoint.scheme == "unix" else "tcp"
    if isinstance(exc, socket.gaierror):
        return f"dial {net}: lookup {endpoint.host}: no such host"
    if isinstance(exc, ConnectionRefusedError):
        return f"dial {net} {where}: connect: connection refused"
    if isinstance(exc, FileNotFoundError):
        return f"dial {net} {where}: connect: no such file or directory"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"dial {net} {where}: i/o timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"tls: failed to verify certificate: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        if exc.reason == "WRONG_VERSION_NUMBER":
            # What Go says when https:// meets a plain-HTTP agent.
            return "http: server gave HTTP response to HTTPS client"
        return f"tls: {exc.reason or exc}"
    if isinstance(exc, ConnectionResetError | http.client.RemoteDisconnected):
        return "EOF"
    return f"dial {net} {where}: {_describe_os_error(exc)}"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body.strip() else None
        except ValueError as exc:
            raise ApiError(f"Failed to decode response: {exc}", self.status) from None


class ApiClient:
    """One agent address plus the token, datacenter and TLS settings to use."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._context = _tls_context(config) if config.endpoint.scheme == "https" else None

    def _connection(self) -> http.client.HTTPConnection:
        ep = self.config.endpoint
        if ep.scheme == "unix":
            return _UnixConnection(ep.host, self.config.timeout_s)
        if ep.scheme == "https":
            assert self._context is not None
            name = self.config.tls_server_name or ep.host
            return _TLSConnection(ep.host, ep.port, self.config.timeout_s, self._context, name)
        return http.client.HTTPConnection(ep.host, ep.port, timeout=self.config.timeout_s)

    def path_with_query(
        self, method: str, path: str, params: Sequence[tuple[str, str]] = ()
    ) -> str:
        """`path` plus the query string, with `dc` and (for reads) `stale` added."""
        query = list(params)
        if self.config.datacenter:
            query.append(("dc", self.config.datacenter))
        if self.config.stale and method == "GET":
            # Go's client sends the bare flag as `stale=`.
            query.append(("stale", ""))
        if not query:
            return path
        return f"{path}?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"

    def request(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        *,
        allow_404: bool = False,
    ) -> Response:
        """Send one request; non-2xx answers raise ApiError (404 too unless `allow_404`)."""
        target = self.path_with_query(method, path, params)
        headers = {"User-Agent": "proconsul-cli"}
        if self.config.token:
            headers["X-Consul-Token"] = self.config.token
        if body is not None:
            headers["Content-Length"] = str(len(body))
        conn = self._connection()
        try:
            conn.request(method, target, body=body, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
            response = Response(reply.status, data, dict(reply.getheaders()))
        except (OSError, http.client.HTTPException) as exc:
            verb = method[:1] + method[1:].lower()
            url = self.config.endpoint.url(target)
            raise ApiError(f'{verb} "{url}": {_dial_error(self.config.endpoint, exc)}') from None
        finally:
            conn.close()
        if 200 <= response.status < 300 or (allow_404 and response.status == 404):
            return response
        text = data.decode("utf-8", errors="replace").strip()
        raise ApiError(
            f"Unexpected response code: {response.status} ({text})", response.status, text
        )

    def get_json(
        self, path: str, params: Sequence[tuple[str, str]] = (), *, allow_404: bool = False
    ) -> Any:
        """GET and decode JSON; a 404 (when allowed) decodes as None."""
        response = self.request("GET", path, params, allow_404=allow_404)
        if response.status == 404:
            return None
        return response.json()

    def put(self, path: str, params: Sequence[tuple[str, str]] = (), body: Any = None) -> Any:
        """PUT a JSON body (or raw bytes) and decode the JSON answer, if any."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        return self.request("PUT", path, params, data).json()


def uint64_flag(text: str) -> int:
    """Go's Uint64 flag parsing (`-modify-index`, `-flags`): decimal, no sign, fits in 64 bits."""
    if not text.isdigit() or int(text) >= 2**64:
        raise ValueError("parse error")
    return int(text)


def client_from(values: Mapping[str, Any]) -> ApiClient:
    """The client for a verb's parsed flag values."""
    return ApiClient(load_config(values))


def quote_path(segment: str) -> str:
    """Escape a user-supplied name (key, service id) for use inside a URL path."""
    return urllib.parse.quote(segment, safe="/")


# --------------------------------------------------------------------------- arguments

_FLAG_LIKE = re.compile(r"^--?([A-Za-z0-9][\w.-]*)(?:=(.*))?$", re.DOTALL)
_ASSIGNMENT = re.compile(r"^([A-Za-z0-9][\w.-]*)=(.*)$", re.DOTALL)


def _shown(name: str, value: str) -> str:
    return "..." if name in SECRET_FLAGS else value


def stray_argument_hint(flags: FlagSet, arg: str) -> str | None:
    """A hint for a positional argument that was probably meant as a flag."""
    match = _FLAG_LIKE.match(arg)
    if match and match.group(1) in flags.flags:
        return f"Flags must come before arguments: move {arg.split('=', 1)[0]} earlier."
    match = _ASSIGNMENT.match(arg)
    if match and match.group(1) in flags.flags:
        name = match.group(1)
        return f"Did you mean -{name}={_shown(name, match.group(2))}? Flags start with '-'."
    return None


def _describe_arg(flags: FlagSet, arg: str) -> str:
    match = _ASSIGNMENT.match(arg)
    if match and match.group(1) in SECRET_FLAGS and match.group(1) in flags.flags:
        return f"{match.group(1)}=..."
    return arg


def parse_args(
    flags: FlagSet, argv: Sequence[str], *, max_args: int, expected: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Parse flags; reject unknown flags and more than `max_args` positionals.

    Errors name the offending argument and add a hint when the argument looks
    like a flag written without its dash (`token=...`) or after a positional.
    """
    try:
        values, args = flags.parse(argv)
    except FlagError as exc:
        # The parser answers -h/-help with the usage text itself; only a -h
        # among the flags counts (`kv put k -h` stores the value "-h").
        if str(exc) == flags.usage():
            raise HelpRequested(str(exc)) from None
        raise CliError(f"{exc}\n\n{flags.usage()}") from None
    if len(args) > max_args:
        extra = args[max_args]
        want = expected if expected is not None else str(max_args)
        lines = [
            f"Too many arguments (expected {want}, got {len(args)}): "
            f'unexpected argument "{_describe_arg(flags, extra)}"'
        ]
        for arg in args[max_args:]:
            hint = stray_argument_hint(flags, arg)
            if hint:
                lines.append(hint)
                break
        raise CliError("\n".join(lines))
    return values, args


def command(func: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
    """Wrap a verb: CliError -> stderr + its exit code, help -> stdout + 0."""

    @functools.wraps(func)
    def wrapper(argv: list[str]) -> int:
        try:
            return func(argv)
        except HelpRequested as exc:
            print(exc)
            return 0
        except CliError as exc:
            print(exc.message, file=sys.stderr)
            return exc.code

    return wrapper


# --------------------------------------------------------------------------- input


def parse_json_or_hcl(text: str) -> Any:
    """A file's JSON, else its HCL (as Consul's verbs take either); ValueError
    with the parser's reason when it is neither."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    except RecursionError:
        raise ValueError("nested too deeply") from None
    import hcl  # imported here: only verbs reading HCL pay for the parser

    try:
        return hcl.loads(text)
    # pyhcl reports bad input with several exception types; all mean the same.
    except Exception as exc:
        raise ValueError(str(exc)) from None


# --------------------------------------------------------------------------- output


def columnize(rows: Sequence[Sequence[str]], glue: str = "  ") -> str:
    """Align rows into columns like Go's columnize: cells padded, two spaces between.

    The last cell of a row is not padded and no line ends in spaces.
    """
    widths: list[int] = []
    for row in rows:
        for i, cell in enumerate(row):
            if i >= len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append(glue.join(cells).rstrip())
    return "\n".join(lines)


def write_out(data: bytes | str) -> None:
    """Write to stdout as bytes, so binary values pass through untouched."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    sys.stdout.flush()
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()
