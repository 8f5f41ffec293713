"""`proconsul snapshot save|restore|inspect`: back up the servers' state and put it back.

Consul's texts: save writes the archive of `GET /v1/snapshot` to a temporary
file beside FILE, verifies it (sums, metadata, state) and renames it into
place, then prints `Saved and verified snapshot to index N`; restore sends
FILE to `PUT /v1/snapshot` and prints `Restored snapshot`; inspect reads
FILE offline and prints its ID, Size, Index, Term and Version, then per
table (Type) the Count of records and their Size, and the Total. Any
failure prints the error and exits 1.
"""

from __future__ import annotations

import os
from pathlib import Path

from proconsul.cli.api_client import (
    ApiError,
    CliError,
    add_api_flags,
    client_from,
    columnize,
    command,
    parse_args,
)
from proconsul.config.flags import FlagSet
from proconsul.state.snapshot import SnapshotError
from proconsul.state.snapshot_archive import read_archive, table_stats


def _file_arg(name: str, args: list[str]) -> str:
    if len(args) != 1:
        raise CliError(f"This command takes one argument: <file>\n\nUsage: proconsul {name} FILE")
    return args[0]


@command
def save(argv: list[str]) -> int:
    flags = FlagSet("snapshot save")
    add_api_flags(flags, server_options=False)
    flags.boolean("stale", False, "Let any server answer, not only the leader.")
    values, args = parse_args(flags, argv, max_args=1)
    path = Path(_file_arg("snapshot save", args))
    params = [("stale", "")] if values["stale"] else []
    try:
        response = client_from(values).request("GET", "/v1/snapshot", params)
    except ApiError as exc:
        raise CliError(f"Error saving snapshot: {exc}") from None
    temp = path.with_name(path.name + ".tmp")
    temp.write_bytes(response.body)
    try:
        meta, _ = read_archive(response.body)
    except SnapshotError as exc:
        temp.unlink(missing_ok=True)
        raise CliError(f"Error verifying snapshot file: {exc}") from None
    os.replace(temp, path)
    print(f"Saved and verified snapshot to index {meta.index}")
    return 0


@command
def restore(argv: list[str]) -> int:
    flags = FlagSet("snapshot restore")
    add_api_flags(flags, server_options=False)
    values, args = parse_args(flags, argv, max_args=1)
    path = Path(_file_arg("snapshot restore", args))
    try:
        archive = path.read_bytes()
    except OSError as exc:
        raise CliError(f"Error opening snapshot file: {exc}") from None
    try:
        client_from(values).request("PUT", "/v1/snapshot", body=archive)
    except ApiError as exc:
        raise CliError(f"Error restoring snapshot: {exc}") from None
    print("Restored snapshot")
    return 0


def human_bytes(size: int) -> str:
    """Sizes as Consul's inspect prints them: 667B, 1.7KB, 12.3MB."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{size}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{size}B"


def inspect_text(archive: bytes, file_size: int) -> str:
    """What `snapshot inspect` prints for an archive (SnapshotError if it is damaged)."""
    meta, state = read_archive(archive)
    head = [
        ["ID", meta.id],
        ["Size", str(file_size)],
        ["Index", str(meta.index)],
        ["Term", str(meta.term)],
        ["Version", str(meta.version)],
    ]
    stats = table_stats(state)
    rows = [["Type", "Count", "Size"], ["----", "----", "----"]]
    rows += [[name, str(count), human_bytes(size)] for name, count, size in stats]
    rows += [["----", "----", "----"], ["Total", "", human_bytes(sum(s for _, _, s in stats))]]
    return _indent(columnize(head, "   ")) + "\n\n" + _indent(columnize(rows, "   ")) + "\n"


def _indent(text: str) -> str:
    return "\n".join(" " + line for line in text.splitlines())


@command
def inspect(argv: list[str]) -> int:
    flags = FlagSet("snapshot inspect")
    _, args = parse_args(flags, argv, max_args=1)
    path = Path(_file_arg("snapshot inspect", args))
    try:
        archive = path.read_bytes()
    except OSError as exc:
        raise CliError(f"Error opening snapshot file: {exc}") from None
    try:
        print(inspect_text(archive, len(archive)), end="")
    except SnapshotError as exc:
        raise CliError(f"Error inspecting snapshot: {exc}") from None
    return 0
