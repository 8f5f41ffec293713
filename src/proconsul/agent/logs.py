"""Agent log output in Consul's shapes: `2021-12-24T02:43:28.638Z [INFO]  agent: msg`
or, with `log_json`, one JSON object per line (`@level`, `@message`, `@module`,
`@timestamp`). Levels are Consul's names (TRACE, DEBUG, INFO, WARN, ERR).
"""

from __future__ import annotations

import json
import logging
import sys
import time

_LEVEL_NAMES = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "ERROR",
}
_CONSUL_LEVELS = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERR": logging.ERROR,
    "ERROR": logging.ERROR,
}


def parse_level(name: str) -> int:
    level = _CONSUL_LEVELS.get(name.upper())
    if level is None:
        raise ValueError(f"Invalid log level: {name}")
    return level


def _timestamp(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = _LEVEL_NAMES.get(record.levelno, record.levelname)
        text = f"{_timestamp(record)} [{level}] {' ' * (5 - len(level))}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        module, sep, rest = message.partition(": ")
        entry = {
            "@level": _LEVEL_NAMES.get(record.levelno, record.levelname).lower(),
            "@message": rest if sep else message,
            "@module": module if sep else record.name,
            "@timestamp": _timestamp(record),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level_name: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if as_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(parse_level(level_name))
    # aiohttp's access log is off; its error logs go through the same handler.
