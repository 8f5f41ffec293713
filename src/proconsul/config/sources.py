"""Finding and parsing config sources: files, directories and inline HCL.

Rules (Consul's):
- A path that is a directory contributes its `*.hcl` and `*.json` files in
  lexical order; other files and subdirectories are skipped (with a warning
  for files, since a misnamed `.conf` is a classic mistake).
- A path that is a file is read in the format its extension names, unless a
  format is forced (`-config-format`); an unknown extension is an error.
- HCL is HCL1, parsed by pyhcl; JSON by the standard library. The top level
  must be an object. Parse errors carry the line the parser reported; an
  unexpected end of input is reported at the last line.
Reading only reads: nothing here writes or changes anything.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl

from proconsul.config.errors import ConfigError

FORMATS = ("hcl", "json")
_PYHCL_POSITION = re.compile(
    r"^Line (?P<line>\d+), column \d+(?:, index \d+)?: (?P<message>.*)$", re.S
)


@dataclass(frozen=True)
class Source:
    """One parsed config source: its label for errors and its raw tree."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)


def read_paths(
    paths: list[str], config_format: str | None = None
) -> tuple[list[Source], list[str]]:
    """Parse every file named or contained in `paths`, in order; return sources and warnings."""
    sources: list[Source] = []
    warnings: list[str] = []
    for path in paths:
        target = Path(path)
        if target.is_dir():
            for file_path, fmt in _directory_files(target, config_format, warnings):
                sources.append(read_file(str(file_path), fmt))
            continue
        if not target.exists():
            raise ConfigError(path, "", "no such file or directory")
        sources.append(read_file(path, _file_format(path, config_format)))
    return sources, warnings


def _directory_files(
    directory: Path, config_format: str | None, warnings: list[str]
) -> list[tuple[Path, str]]:
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise ConfigError(str(directory), "", f"cannot read directory: {exc.strerror}") from None
    chosen = []
    for name in names:
        file_path = directory / name
        if file_path.is_dir():
            continue
        fmt = config_format or _extension_format(name)
        if fmt is None:
            warnings.append(
                f"skipping file {file_path}, extension must be .hcl or .json, "
                "or config format must be set"
            )
            continue
        chosen.append((file_path, fmt))
    return chosen


def _extension_format(name: str) -> str | None:
    suffix = Path(name).suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else None


def _file_format(path: str, config_format: str | None) -> str:
    fmt = config_format or _extension_format(path)
    if fmt is None:
        raise ConfigError(
            path, "", "unknown file extension; name it .hcl or .json, or set -config-format"
        )
    return fmt


def read_file(path: str, fmt: str) -> Source:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(path, "", "not valid UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read file: {exc.strerror}") from None
    return parse_text(path, text, fmt)


def parse_text(name: str, text: str, fmt: str) -> Source:
    """Parse HCL or JSON text into a Source named `name` (used in errors)."""
    data = _parse_json(name, text) if fmt == "json" else _parse_hcl(name, text)
    if not isinstance(data, dict):
        raise ConfigError(name, "", "the top level must be an object")
    return Source(name, data)


def _parse_json(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(name, "", f"invalid JSON: {exc.msg}", exc.lineno) from None
    except RecursionError:
        # The standard parser recurses once per nested array or object.
        raise ConfigError(name, "", "invalid JSON: nested too deeply") from None


def _parse_hcl(name: str, text: str) -> Any:
    try:
        return hcl.loads(text)
    # pyhcl raises ValueError for syntax errors, and other types on odd input.
    except Exception as exc:
        message = str(exc).strip() or type(exc).__name__
        located = _PYHCL_POSITION.match(message)
        if located:
            line = int(located.group("line"))
            raise ConfigError(name, "", f"invalid HCL: {located.group('message')}", line) from None
        if message.startswith("Unexpected end of file"):
            last_line = max(1, len(text.rstrip("\n").split("\n")))
            raise ConfigError(name, "", f"invalid HCL: {message}", last_line) from None
        raise ConfigError(name, "", f"invalid HCL: {message}") from None
