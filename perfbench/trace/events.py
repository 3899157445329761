"""JSON text of trace events -> numeric columns, by the rules of perfbench.trace.parse.

Two readers, one set of rules. With msgspec installed, a list of events is decoded into typed
records (`_Event`) that skip every field but ph, cat, name, pid, tid, ts, dur and args.correlation
in C; `_from_structs` turns them into columns with C-level loops. A list holding anything of an
unusual type (a string timestamp, a float correlation id, a non-object element) fails that
decoding and is read by `from_dicts` from plain JSON, one event at a time, applying the rules to
every odd value. JSON text is only ever decoded by `safe_loads` or the typed decoder: deep nesting
is a `Malformed` error, never a crash.
"""

from __future__ import annotations

import json
import math
import operator
import re
import zlib
from itertools import compress
from typing import Any, Optional, Union

import numpy as np

try:  # typed decoding that skips unneeded fields in C; the plain-JSON reader is the fallback
    import msgspec
except ImportError:  # pragma: no cover - depends on the environment
    msgspec = None

# Event kinds, as small ints in the columns (names in KIND_NAMES).
CPU_OP, ANNOTATION, MODULE, RUNTIME, DRIVER, KERNEL, MEMCPY, MEMSET = range(8)
KIND_NAMES = {
    CPU_OP: "cpu_op",
    ANNOTATION: "user_annotation",
    MODULE: "python_function",
    RUNTIME: "cuda_runtime",
    DRIVER: "cuda_driver",
    KERNEL: "kernel",
    MEMCPY: "gpu_memcpy",
    MEMSET: "gpu_memset",
}

# Category spellings seen across Kineto versions (old traces: "Operator", "Kernel", "Runtime", ...).
# Anything else (flows "ac2g"/"fwdbwd", "cuda_sync", "gpu_user_annotation", "overhead", "Trace",
# metadata without a category) is skipped.
_CATEGORY_KIND = {
    "cpu_op": CPU_OP,
    "operator": CPU_OP,
    "user_annotation": ANNOTATION,
    "python_function": MODULE,
    "cuda_runtime": RUNTIME,
    "runtime": RUNTIME,
    "cuda_driver": DRIVER,
    "driver": DRIVER,
    "kernel": KERNEL,
    "gpu_memcpy": MEMCPY,
    "memcpy": MEMCPY,
    "gpu_memset": MEMSET,
    "memset": MEMSET,
}
_MODULE_PREFIX = "nn.Module:"
_I64 = 2**63


def _probe_orjson() -> Any:
    """orjson.loads if this orjson refuses deep nesting (newer releases); older ones crash the
    process on a few hundred thousand nested brackets, so they are not used on untrusted text."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    try:
        orjson.loads(b"[" * 1100 + b"]" * 1100)
    except ValueError:
        return orjson.loads
    return None


if msgspec is not None:
    _loads = msgspec.json.decode
else:  # pragma: no cover - depends on the environment
    _loads = _probe_orjson() or json.loads


class Malformed(ValueError):
    """A slice (or the tail) that is not valid JSON, or nested too deeply to decode."""

    def __init__(self, exc: BaseException):
        self.deep = isinstance(exc, RecursionError)
        self.pos = getattr(exc, "pos", None)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        m = re.search(r"\(byte (\d+)\)", msg)  # msgspec says where, in its message
        if self.pos is None and m:
            self.pos = int(m.group(1))
        self.truncated = "truncated" in msg.lower() or "unexpected end" in msg.lower()
        msg = re.sub(r":? line \d+ column \d+ \(char \d+\)$| \(byte \d+\)$", "", msg)  # positions in our slice, not the file
        super().__init__("nested too deeply to decode (deeper than any profiler trace)" if self.deep else msg)


class NotEvents(ValueError):
    """Valid JSON, but the events list holds something that is not an event object."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def safe_loads(data: bytes) -> Any:
    """Decode JSON text; ValueError (a `Malformed`) for bad or too deeply nested text, never a crash.
    A number beyond a double's range (1e400), which the fast decoders refuse, is decoded by the
    standard library as an infinity, for the range checks to count."""
    try:
        return _loads(data)
    except (ValueError, RecursionError) as exc:  # msgspec.DecodeError is a ValueError
        if "out of range" not in str(exc) and "infinity" not in str(exc):
            raise Malformed(exc) from None
    try:
        return json.loads(bytes(data), parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise Malformed(exc) from None


# ------------------------------------------------------------------------------------ events -> columns


class _KindOf(dict):
    """category -> kind (-1: skipped), cached for the few spellings a trace uses."""

    def __missing__(self, cat: Any) -> int:
        kind = _CATEGORY_KIND.get(cat.lower(), -1) if isinstance(cat, str) else -1
        if len(self) < 4096:  # a hostile trace may have millions of categories
            self[cat] = kind
        return kind


_KIND_OF = _KindOf()


class Codes(dict):
    """name -> small int code, in order of first appearance (list(codes) is the name table)."""

    def __missing__(self, name: str) -> int:
        code = self[name] = len(self)
        return code


COLUMNS = (("kind", np.int8), ("name", np.int32), ("pid", np.int64), ("tid", np.int64),
            ("ts", np.float64), ("dur", np.float64), ("corr", np.int64))


def _odd_id(v: Any) -> int:
    """A stable negative code for an id that is no 64-bit integer (a string, a float, a 100-digit
    number): the same text gives the same code in every process, within +-2^31 so thread keys fit."""
    return -(1 << 30) - (zlib.crc32(str(v).encode("utf-8", "replace")) & 0x3FFFFFFF)


def id_value(v: Any) -> int:
    """pid/tid -> int64: integers (and integer strings, as numpy reads them) as they are, None -1."""
    if v is None:
        return -1
    if type(v) is float:
        return int(v) if v.is_integer() and abs(v) < _I64 else _odd_id(v)
    if type(v) is not bool:
        try:
            i = int(v)
        except (TypeError, ValueError, OverflowError):
            return _odd_id(v)
        if -_I64 <= i < _I64:
            return i
    return _odd_id(v)


def _number(v: Any) -> float:
    """ts/dur -> float; NaN (dropped, counted) for anything that is not a JSON number."""
    if type(v) is float:
        return v
    if type(v) is int:
        try:
            return float(v)
        except OverflowError:
            return math.nan
    return math.nan


def _corr_value(args: Any) -> int:
    """args.correlation -> int64: missing -1; not an integer in [0, 2^63) (or -1): -2, counted."""
    if not isinstance(args, dict) or "correlation" not in args:
        return -1
    c = args["correlation"]
    return c if type(c) is int and -1 <= c < _I64 else -2


def _name_text(v: Any) -> str:
    return v if isinstance(v, str) else "" if v is None else str(v)


def _int_column(get: Any, rows: list, convert: Any) -> np.ndarray:
    """int64 column of get(row); rows holding anything else (a string, a 100-digit number) go
    through `convert`, one by one."""
    try:
        return np.fromiter(map(get, rows), np.int64, len(rows))
    except (TypeError, ValueError, OverflowError):
        return np.fromiter(map(convert, map(get, rows)), np.int64, len(rows))


def _corr_int(c: int) -> int:
    return c if -1 <= c < _I64 else -2


def from_dicts(events: Any, codes: Codes) -> dict[str, Any]:
    """The lenient reader: plain decoded JSON (lists of dicts) -> columns. Every odd value follows
    the rules in the module docstring; an element that is not an object is refused."""
    if not isinstance(events, list):
        raise NotEvents("traceEvents is not a list")
    cols: list[list] = [[] for _ in COLUMNS]
    k, nm, pid, tid, ts, dur, corr = cols
    for e in events:
        if not isinstance(e, dict):
            raise NotEvents(f"an element of traceEvents is not an object: {str(e)[:60]!r}")
        cat = e.get("cat")
        kind = _KIND_OF[cat] if isinstance(cat, str) else -1
        if kind < 0 or e.get("ph") != "X":
            continue
        name = _name_text(e.get("name"))
        if kind == MODULE and not name.startswith(_MODULE_PREFIX):
            continue
        k.append(kind)
        nm.append(codes[name])
        pid.append(id_value(e.get("pid")))
        tid.append(id_value(e.get("tid")))
        ts.append(_number(e.get("ts")))
        dur.append(_number(e.get("dur", 0.0)))
        corr.append(_corr_value(e.get("args")))
    out: dict[str, Any] = {"n": len(events)}
    for (key, dtype), values in zip(COLUMNS, cols):
        out[key] = np.array(values, dtype=dtype)
    return out


if msgspec is not None:

    class _Args(msgspec.Struct, gc=False):
        correlation: int = -1

    class _Event(msgspec.Struct, gc=False):
        """The fields read; everything else is skipped by the decoder. Defaults = missing values.
        A value of another type fails the slice over to the lenient reader."""

        ph: Optional[str] = None
        cat: Optional[str] = None
        name: str = ""
        pid: Union[int, str] = -1
        tid: Union[int, str] = -1
        ts: float = math.nan
        dur: float = 0.0
        args: _Args = msgspec.field(default_factory=_Args)

    TYPED = msgspec.json.Decoder(list[_Event])
    RAW_DOC = msgspec.json.Decoder(dict[str, msgspec.Raw])
else:  # pragma: no cover - depends on the environment
    TYPED = RAW_DOC = None


class _KindOfX(dict):
    """(ph, cat) -> kind; -1 unless ph is "X" and the category is one we read."""

    def __missing__(self, key: tuple) -> int:
        ph, cat = key
        kind = _KIND_OF[cat] if ph == "X" else -1
        if len(self) < 4096:
            self[key] = kind
        return kind


_KIND_OF_X = _KindOfX()
_GET = {f: operator.attrgetter(f) for f in ("name", "pid", "tid", "ts", "dur", "args.correlation")}
_GET_PH_CAT = operator.attrgetter("ph", "cat")


def _from_structs(evs: list, codes: Codes) -> dict[str, Any]:
    """Typed records -> columns, with C-level loops (map/attrgetter/fromiter), no per-event Python."""
    kind = np.fromiter(map(_KIND_OF_X.__getitem__, map(_GET_PH_CAT, evs)), np.int8, len(evs))
    keep = kind >= 0
    sel = list(compress(evs, keep.tolist()))
    kind = kind[keep]
    mod = np.flatnonzero(kind == MODULE)
    if len(mod):  # python_function: only nn.Module frames are kept
        ok = np.ones(len(sel), dtype=bool)
        ok[mod] = [sel[i].name.startswith(_MODULE_PREFIX) for i in mod.tolist()]
        if not ok.all():
            sel, kind = list(compress(sel, ok)), kind[ok]
    m = len(sel)
    return {
        "n": len(evs),
        "kind": kind,
        "name": np.fromiter(map(codes.__getitem__, map(_GET["name"], sel)), np.int32, m),
        "pid": _int_column(_GET["pid"], sel, id_value),
        "tid": _int_column(_GET["tid"], sel, id_value),
        "ts": np.fromiter(map(_GET["ts"], sel), np.float64, m),
        "dur": np.fromiter(map(_GET["dur"], sel), np.float64, m),
        "corr": _int_column(_GET["args.correlation"], sel, _corr_int),
    }


def decode_events(text: bytes, codes: Codes) -> dict[str, Any]:
    """A JSON list of events -> columns: typed when every value has its usual type, else lenient."""
    if TYPED is not None:
        try:
            return _from_structs(TYPED.decode(text), codes)
        except msgspec.ValidationError:
            pass  # valid JSON with an odd value somewhere: the lenient reader decides
        except (ValueError, RecursionError) as exc:
            raise Malformed(exc) from None
    return from_dicts(safe_loads(text), codes)


# ------------------------------------------------------------------------------------ the tail of the document


def tail_events(doc: bytes, is_obj: bool, meta: dict[str, Any]) -> Any:
    """The tail document -> its events (raw JSON text when msgspec can defer them, else decoded);
    the keys after traceEvents go into meta."""
    if not is_obj:
        return doc
    if RAW_DOC is not None:
        try:
            parts = RAW_DOC.decode(doc)
        except msgspec.ValidationError:  # valid JSON, but not an object: say so below
            parts = safe_loads(doc)
        except (ValueError, RecursionError) as exc:
            raise Malformed(exc) from None
    else:  # pragma: no cover - depends on the environment
        parts = safe_loads(doc)
    if not isinstance(parts, dict):
        raise NotEvents("the document is not a JSON object")
    events = parts.pop("traceEvents", b"[]")
    for k, v in parts.items():
        meta[k] = safe_loads(v) if _is_raw(v) else v
    return events


def _is_raw(v: Any) -> bool:
    return msgspec is not None and isinstance(v, msgspec.Raw)


def decode_tail(events: Any, codes: Codes) -> dict[str, Any]:
    if isinstance(events, (bytes, bytearray)) or _is_raw(events):
        return decode_events(events, codes)
    return from_dicts(events, codes)


