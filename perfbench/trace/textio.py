"""The text of a trace file, read within bounds: gzip (by its magic bytes) or plain, inflated by a
helper thread (ISA-L when the `isal` package is installed, about 4x zlib; zlib otherwise; both
release the GIL), handed over in blocks of a few MB.

Bounds, so a hostile file costs little before it is refused (InputError naming the file):
decompressed text beyond `max_bytes` (default 4 GiB; PERFBENCH_MAX_TRACE_BYTES or
--max-trace-bytes raise it), and gzip data inflating more than 100:1 once 16 MB are out (profiler
traces compress about 10:1: more is a compression bomb; an explicit limit lifts this check).
"""

from __future__ import annotations

import os
import queue
import re
import threading
import zlib as _stdlib_zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from perfbench.errors import InputError

try:  # ISA-L inflates gzip about four times as fast as zlib; same API
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - depends on the environment
    _zlib = _stdlib_zlib

#: Decompressed text refused beyond this (PERFBENCH_MAX_TRACE_BYTES / --max-trace-bytes raise it).
DEFAULT_MAX_BYTES = 4 << 30
MAX_BYTES_ENV = "PERFBENCH_MAX_TRACE_BYTES"
#: gzip data inflating more than this ratio past RATIO_MIN_BYTES is a bomb, not a trace (Kineto
#: traces compress 9-20:1). Not applied when the caller sets max_bytes explicitly.
MAX_GZIP_RATIO = 100
RATIO_MIN_BYTES = 16 << 20
BLOCK_BYTES = 4 << 20  # decompressed block handed over
GZ_READ_BYTES = 512 << 10  # compressed bytes read at a time (~5 MB inflated)


def parse_size(text: str, what: str) -> int:
    """'4G', '512M', '300000k' or a plain byte count -> bytes (binary units). InputError naming
    `what` when it is not a positive size."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", str(text))
    if not m:
        raise InputError(f"{what}: expected a size in bytes such as 4G, 512M or 1000000, got {text!r}")
    scale = 1 << (10 * " kmgt".index(m.group(2).lower() or " "))
    size = int(float(m.group(1)) * scale)
    if size < 1 << 20:
        raise InputError(f"{what}: must be at least 1M (a trace is never smaller), got {text!r}")
    return size


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    check_ratio: bool  # off once somebody raised the limit on purpose
    block_bytes: int = BLOCK_BYTES


def limits_for(max_bytes: Optional[int], block_bytes: int = BLOCK_BYTES) -> Limits:
    """The bounds for one read: `max_bytes` if given, else PERFBENCH_MAX_TRACE_BYTES, else the
    default (with the ratio check)."""
    if max_bytes is not None:
        if max_bytes <= 0:
            raise InputError(f"max_bytes must be positive, got {max_bytes}")
        return Limits(int(max_bytes), False, block_bytes)
    env = os.environ.get(MAX_BYTES_ENV)
    if env:
        return Limits(parse_size(env, MAX_BYTES_ENV), False, block_bytes)
    return Limits(DEFAULT_MAX_BYTES, True, block_bytes)


def human(n: float) -> str:
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1 << 20):.1f} MiB" if n < 1 << 30 else f"{n / (1 << 30):.1f} GiB"


class _Refused(Exception):
    """Raised by the reader thread; the consumer turns it into an InputError naming the file."""


# ------------------------------------------------------------------------------------ reading


def open_text(path: Path, max_bytes: Optional[int] | Limits = None) -> Iterator[bytes]:
    """Yield decompressed blocks of ~4 MB; gzip is detected by its magic bytes, not the name.
    Refuses (InputError) a missing or unreadable file, text beyond the limits and gzip bombs,
    without holding them."""
    limits = max_bytes if isinstance(max_bytes, Limits) else limits_for(max_bytes)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read trace ({exc.strerror or exc})") from None
    with fh:
        magic = fh.read(2)
        fh.seek(0)
        if magic != b"\x1f\x8b":
            yield from _plain_blocks(path, fh, limits)
        else:
            yield from _gzip_blocks(path, fh, limits)


def _too_big(limit: int) -> str:
    return (f"more than {human(limit)} of JSON text: refused (raise the limit with --max-trace-bytes "
            f"or {MAX_BYTES_ENV} if this really is one trace)")


def _plain_blocks(path: Path, fh: Any, limits: Limits) -> Iterator[bytes]:
    try:
        size = os.fstat(fh.fileno()).st_size
    except OSError:
        size = 0
    if size > limits.max_bytes:
        raise InputError(f"{path}: {_too_big(limits.max_bytes)}")
    total = 0
    while True:
        try:
            block = fh.read(limits.block_bytes)
        except OSError as exc:
            raise InputError(f"{path}: cannot read trace ({exc.strerror or exc})") from None
        if not block:
            return
        total += len(block)
        if total > limits.max_bytes:  # the file grew while being read
            raise InputError(f"{path}: {_too_big(limits.max_bytes)}")
        yield block


def _gzip_blocks(path: Path, fh: Any, limits: Limits) -> Iterator[bytes]:
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    worker = threading.Thread(target=_inflate, args=(fh, q, stop, limits), name="perfbench-trace-gunzip", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise _reader_error(path, item)
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            worker.join(0.01)


def _reader_error(path: Path, exc: BaseException) -> InputError:
    if isinstance(exc, _Refused):
        return InputError(f"{path}: {exc}")
    if isinstance(exc, EOFError):
        return InputError(f"{path}: truncated gzip file (compressed data ends early)")
    if isinstance(exc, OSError) and not isinstance(exc, _stdlib_zlib.error):
        return InputError(f"{path}: cannot read trace ({exc.strerror or exc})")
    return InputError(f"{path}: corrupt gzip data ({exc})")


class _Inflater:
    """gzip members (concatenated members allowed) -> blocks, counting what comes out."""

    def __init__(self, fh: Any, limits: Limits):
        self.fh, self.limits = fh, limits
        self.read_in = 0
        self.out = 0

    def blocks(self) -> Iterator[bytes]:
        d = _zlib.decompressobj(wbits=31)
        pending = b""
        started = False
        while True:
            data = pending or self._read()
            pending = b""
            if not data:
                if started and not d.eof:
                    raise EOFError("compressed data ends before the end-of-stream marker")
                return
            started = True
            out = d.decompress(data, self.limits.block_bytes)
            while True:
                if out:
                    yield self._count(out)
                if d.eof:
                    pending = d.unused_data
                    d = _zlib.decompressobj(wbits=31)
                    started = bool(pending.strip(b"\x00"))
                    if not started:
                        pending = b""
                    break
                tail = d.unconsumed_tail
                if not tail:
                    break
                out = d.decompress(tail, self.limits.block_bytes)

    def _read(self) -> bytes:
        data = self.fh.read(GZ_READ_BYTES)
        self.read_in += len(data)
        return data

    def _count(self, out: bytes) -> bytes:
        self.out += len(out)
        if self.out > self.limits.max_bytes:
            raise _Refused(_too_big(self.limits.max_bytes))
        if self.limits.check_ratio and self.out > RATIO_MIN_BYTES and self.out > MAX_GZIP_RATIO * self.read_in:
            raise _Refused(
                f"gzip data inflates more than {MAX_GZIP_RATIO}:1 ({human(self.read_in)} -> {human(self.out)} so far): "
                f"a compression bomb, not a profiler trace (those compress about 10:1); refused "
                f"(--max-trace-bytes or {MAX_BYTES_ENV} lifts this check)"
            )
        return out


def _inflate(fh: Any, q: queue.Queue, stop: threading.Event, limits: Limits) -> None:
    """Producer thread: put inflated blocks, then None (or the exception that stopped it)."""

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        for block in _Inflater(fh, limits).blocks():
            if stop.is_set() or not put(block):
                return
        put(None)
    except BaseException as exc:  # zlib.error, EOFError, OSError, _Refused: never leave the consumer waiting
        put(exc)


