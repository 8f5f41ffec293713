"""RPC wire frames: a 4-byte big-endian length, then one msgpack `Frame`.

Job: turn frames into bytes and a byte stream back into frames. Pure: no
sockets, clocks or randomness, so the decoder can be fuzzed on its own.

Rules:
- APPEND-ONLY. `FrameKind` values are numbered: never reuse or renumber one.
  `Frame` is `array_like` (fields travel by position), so never remove or
  reorder a field; new fields go at the end with a default, which lets an
  older peer still decode what a newer one sends.
- A frame body is at most `MAX_FRAME_SIZE` bytes. A longer length prefix is
  never buffered: the decoder fails at once, so a peer cannot make us hold
  more than one maximal frame per connection.
- `FrameError` (and its subclass `FrameTooLarge`) is the only exception
  `FrameDecoder.feed` raises, whatever the input. After one, the decoder is
  spent: the stream has lost its framing and the connection must close.
  Frames decoded earlier in the same `feed` call are dropped with it.
- Unknown frame kinds decode fine (a newer peer may send them); the caller
  decides what to do with them.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import msgspec

MAX_FRAME_SIZE = 16 * 1024 * 1024  # bytes of one frame body (not counting the prefix)
LENGTH_PREFIX = 4
MAX_METHOD_LENGTH = 256

U64 = Annotated[int, msgspec.Meta(ge=0)]  # msgpack ints stop at 2**64 - 1 anyway
U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]


class FrameKind(enum.IntEnum):
    """What a frame is. Append-only numbering: never reuse or renumber."""

    REQUEST = 1  # method + payload; answered by RESPONSE or ERROR with the same id
    RESPONSE = 2  # payload is the handler's result
    ERROR = 3  # `error` says what went wrong, `code` classifies it
    ONE_WAY = 4  # method + payload, never answered
    CANCEL = 5  # the caller gave up on request `id`; the server stops it


class Frame(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One message. Which fields matter depends on `kind` (see FrameKind).

    APPEND-ONLY field order (see the module rules).
    """

    kind: Annotated[int, msgspec.Meta(ge=0, le=255)]
    id: U64
    method: Annotated[str, msgspec.Meta(max_length=MAX_METHOD_LENGTH)] = ""
    payload: bytes = b""
    timeout_ms: U32 = 0  # REQUEST: the caller's deadline; 0 means the server's default
    error: str = ""  # ERROR: the message shown to the caller
    code: str = ""  # ERROR: a machine-readable class (see ErrorCode in errors.py)


FrameErrorReason = Literal["oversized", "malformed"]


class FrameError(Exception):
    """The byte stream is not a valid frame sequence; the connection must close."""

    reason: FrameErrorReason = "malformed"


class FrameTooLarge(FrameError):
    """A length prefix (or a frame to send) exceeds the maximum frame size."""

    reason: FrameErrorReason = "oversized"


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def encode_frame(frame: Frame, max_frame_size: int = MAX_FRAME_SIZE) -> bytearray:
    """The frame with its length prefix, ready to write. Raises FrameTooLarge."""
    buf = bytearray(LENGTH_PREFIX)
    # Encoding straight after the reserved prefix saves copying the payload again.
    _encoder.encode_into(frame, buf, LENGTH_PREFIX)
    size = len(buf) - LENGTH_PREFIX
    if size > max_frame_size:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {max_frame_size}")
    buf[:LENGTH_PREFIX] = size.to_bytes(LENGTH_PREFIX, "big")
    return buf


def decode_body(body: bytes | memoryview) -> Frame:
    """One frame body (no prefix). Raises FrameError."""
    try:
        return _decoder.decode(body)
    except (msgspec.MsgspecError, ValueError, RecursionError) as exc:
        # ValueError: msgspec lets UnicodeDecodeError through for bad UTF-8 in a str.
        # RecursionError: a trailing field (skipped, as a newer peer's would be)
        # nested past the recursion limit.
        raise FrameError(f"malformed frame: {exc}") from None


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get whole frames back."""

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._failed: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        if self._failed is not None:
            raise type(self._failed)(str(self._failed))
        try:
            if self._buf:
                self._buf += data
                frames, used = self._parse(self._buf)
                del self._buf[:used]
            else:
                # Common case: nothing buffered, so parse the chunk in place and
                # keep only an unfinished tail.
                frames, used = self._parse(data)
                if used < len(data):
                    self._buf += memoryview(data)[used:]
        except FrameError as exc:
            self._failed = exc
            self._buf = bytearray()
            raise
        return frames

    def _parse(self, data: bytes | bytearray | memoryview) -> tuple[list[Frame], int]:
        frames: list[Frame] = []
        pos = 0
        end = len(data)
        with memoryview(data) as view:
            while end - pos >= LENGTH_PREFIX:
                size = int.from_bytes(view[pos : pos + LENGTH_PREFIX], "big")
                if size > self.max_frame_size:
                    raise FrameTooLarge(
                        f"frame of {size} bytes exceeds the limit of {self.max_frame_size}"
                    )
                if size == 0:
                    raise FrameError("malformed frame: empty body")
                start = pos + LENGTH_PREFIX
                if end - start < size:
                    break
                with view[start : start + size] as body:
                    frames.append(decode_body(body))
                pos = start + size
        return frames, pos
