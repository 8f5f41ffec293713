"""`proconsul keygen`: one line of base64 holding 32 fresh random bytes."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from proconsul.cli.main import main


def keygen(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["keygen", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_prints_32_bytes_of_standard_base64(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = keygen(capsys)
    assert (code, err) == (0, "")
    assert out.endswith("\n") and out.count("\n") == 1
    key = out.strip()
    assert len(key) == 44
    assert len(base64.b64decode(key, validate=True)) == 32


def test_keys_differ_across_runs(capsys: pytest.CaptureFixture[str]) -> None:
    keys = {keygen(capsys)[1] for _ in range(20)}
    assert len(keys) == 20


def test_rejects_flags_and_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = keygen(capsys, "-bits", "16")
    assert code == 1 and out == "" and "flag provided but not defined: -bits" in err
    code, out, err = keygen(capsys, "extra")
    assert code == 1 and out == "" and "unexpected argument: extra" in err


def test_runs_as_a_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proconsul", "keygen"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert len(base64.b64decode(result.stdout.strip(), validate=True)) == 32
