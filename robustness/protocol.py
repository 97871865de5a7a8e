"""Messages between the user's process and the attack worker: length-prefixed JSON over pipes.

Each message is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON (an object
with an ``"op"`` key). Model scores travel as float32 bytes in base64, so the worker sees exactly
the values the model computed. Nothing is unpickled: a message can only ever be data.
Standard library only: both sides import this module (the worker in its own environment).

Example:
    >>> import os
    >>> read_end, write_end = os.pipe()
    >>> write_message(write_end, {"op": "query", "texts": ["a fine film"]})
    >>> read_message(read_end, timeout_s=1.0)
    {'op': 'query', 'texts': ['a fine film']}
"""

from __future__ import annotations

import base64
import json
import os
import select
import struct
import time
from typing import Any

__all__ = [
    "MAX_MESSAGE_BYTES",
    "ProtocolError",
    "WorkerTimeout",
    "decode_array",
    "encode_array",
    "read_message",
    "write_message",
]

_HEADER = struct.Struct(">I")
#: A larger length prefix means a corrupt stream.
MAX_MESSAGE_BYTES = 1 << 30


class ProtocolError(RuntimeError):
    """The other side closed the pipe or sent something that is not a message."""


class WorkerTimeout(TimeoutError):
    """No complete message arrived within the time-out."""


def write_message(fd: int, message: dict[str, Any]) -> None:
    """Write ``message`` (JSON-serialisable) to the file descriptor ``fd``."""
    body = json.dumps(message, ensure_ascii=False).encode("utf-8")
    data = memoryview(_HEADER.pack(len(body)) + body)
    while data:
        try:
            written = os.write(fd, data)
        except (BrokenPipeError, OSError) as error:
            raise ProtocolError(f"the other side closed the pipe ({error})") from None
        data = data[written:]


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    missing = size
    while missing:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise WorkerTimeout("no message within the time-out")
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            raise ProtocolError("the other side closed the pipe")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int, timeout_s: float | None = None) -> dict[str, Any]:
    """The next message from ``fd``; waits at most ``timeout_s`` seconds (``None``: forever).

    Raises:
        WorkerTimeout: nothing complete arrived in time.
        ProtocolError: end of stream, or bytes that are not a message.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size, deadline))
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"a message of {size} bytes announced: the stream is corrupt")
    try:
        message = json.loads(_read_exactly(fd, size, deadline).decode("utf-8"))
    except ValueError as error:
        raise ProtocolError(f"not a JSON message: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("a message must be a JSON object with an 'op'")
    return message


def encode_array(values: Any) -> dict[str, Any]:
    """A float32 array (anything ``numpy.asarray`` takes) as ``{"shape", "data"}``."""
    import numpy as np

    array = np.ascontiguousarray(np.asarray(values, dtype="<f4"))
    return {"shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode("ascii")}


def decode_array(message: dict[str, Any]) -> Any:
    """The float32 ``numpy`` array of :func:`encode_array`."""
    import numpy as np

    shape = tuple(int(n) for n in message["shape"])
    array = np.frombuffer(base64.b64decode(message["data"]), dtype="<f4")
    if array.size != int(np.prod(shape)):
        raise ProtocolError(f"scores of shape {shape} hold {array.size} values")
    return array.reshape(shape).astype(np.float32)
