"""Shared YAML reading and validation messages for every YAML perfbench reads (workload specs,
hardware profiles, sweeps), so each bad file gets the same clear error: the file, the dotted field
path, and what is allowed."""

from __future__ import annotations

import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from perfbench.errors import SpecError

#: What a workload or sweep name may hold: it becomes a label in tables, file names and plots, so
#: letters, digits and a few separators; never markup brackets, quotes or control characters.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._+:@,=()/-]{0,127}$"
NAME_RULE = ("1-128 characters: letters, digits, space and . _ + : @ , = ( ) / -, starting with a "
             "letter or digit (no brackets, quotes or control characters)")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9 ._+:@,=()/-]")


def safe_name(text: str) -> str:
    """A name perfbench makes up (a sweep trial's `sweep:param=value`) within NAME_PATTERN:
    characters outside it become `_`."""
    return _NOT_IN_NAME.sub("_", text)[:128]


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `989.4e12` and `1e9` as floats (YAML 1.2), not strings, and
    refuses duplicate keys: PyYAML would silently keep the last one, so `compile: turbo` followed
    by `compile: none` would run without a word about the first."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001 - PyYAML's signature
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML reports it below
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first.start_mark.line + 1}); "
                    "each field may appear once", key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)
# YAML 1.2 booleans: only true/false. YAML 1.1 also reads on/off/yes/no as booleans, which turns
# `energy: off` or `--set measure.energy=off` into False instead of the mode's name.
_BOOL = "tag:yaml.org,2002:bool"
YamlLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for ch, resolvers in YamlLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


#: Bounds on what one YAML document may hold, so a hostile file is refused in milliseconds: its
#: size, its nesting depth, and its node count with every alias expanded (an "anchor bomb" of
#: aliases of aliases expands exponentially). Each can be raised by an environment variable.
YAML_LIMITS = {"bytes": ("PERFBENCH_YAML_MAX_BYTES", 4 << 20),
               "depth": ("PERFBENCH_YAML_MAX_DEPTH", 32),
               "nodes": ("PERFBENCH_YAML_MAX_NODES", 200_000)}


def env_limit(env: str, default: int) -> int:
    """A limit that an environment variable may raise; a bad value is bad input naming it."""
    raw = os.environ.get(env)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise SpecError(env, [("", f"must be a positive whole number, got {raw!r}")])
    return value


def yaml_limit(kind: str) -> int:
    return env_limit(*YAML_LIMITS[kind])


def read_yaml(path: Path) -> Any:
    """Read a YAML file, turning I/O and syntax errors into SpecError naming the file."""
    try:
        size = Path(path).stat().st_size
        if size > yaml_limit("bytes"):
            raise SpecError(str(path), [("", f"{size:,} bytes is over the {yaml_limit('bytes'):,}-byte limit "
                                             f"for a YAML file (raise {YAML_LIMITS['bytes'][0]})")])
        text = Path(path).read_text()
    except FileNotFoundError:
        raise SpecError(str(path), [("", "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), [("", f"not UTF-8 text (byte {exc.start}): a YAML file is expected")]) from None
    except OSError as exc:
        raise SpecError(str(path), [("", f"cannot read file: {exc.strerror or exc}")]) from None
    return load_yaml_text(text, str(path))


def load_yaml_text(text: str, source: str) -> Any:
    """Parse one YAML document within the limits above; SpecError naming `source` otherwise."""
    if len(text) > yaml_limit("bytes"):
        raise SpecError(source, [("", f"over the {yaml_limit('bytes'):,}-byte limit for YAML")])
    loader = YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [("", f"not valid YAML{where}: {problem}")]) from None
    except RecursionError:
        raise SpecError(source, [("", f"nested too deeply (limit {yaml_limit('depth')} levels)")]) from None
    finally:
        loader.dispose()


def _check_expanded(root: yaml.Node, source: str) -> None:
    """Depth and node count with aliases expanded, computed once per distinct node (so a bomb costs
    linear time to detect); a node that contains itself is refused too."""
    max_depth, max_nodes = yaml_limit("depth"), yaml_limit("nodes")
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, done = stack.pop()
        kids = _children(node)
        if done:
            open_.discard(id(node))
            size[id(node)] = 1 + sum(size[id(k)] for k in kids)
            depth[id(node)] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[id(node)] > max_nodes or depth[id(node)] > max_depth:
                what = (f"more than {max_nodes:,} values once aliases are expanded"
                        if size[id(node)] > max_nodes else f"nested more than {max_depth} levels deep")
                env = YAML_LIMITS["nodes" if size[id(node)] > max_nodes else "depth"][0]
                raise SpecError(source, [("", f"{what} (raise {env} if this is intended)")])
            continue
        if id(node) in size:
            continue
        if id(node) in open_:
            raise SpecError(source, [("", "an alias refers to a node that contains it (a recursive structure)")])
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class that owns the last element of `loc` (for 'allowed fields' messages)."""
    cls: type[BaseModel] = root
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        ann = field.annotation
        if typing.get_origin(ann) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(ann) if a is not type(None)]
            ann = members[0] if len(members) == 1 else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cls = ann
        else:
            return None
    return cls


def _description(root: type[BaseModel], loc: tuple) -> str | None:
    owner = _model_at(root, loc)
    field = owner.model_fields.get(loc[-1]) if owner is not None and loc else None
    return field.description if field is not None else None


_ALLOWED_HINTS = {
    "float_type": "a number such as 989.4e12",
    "float_parsing": "a number such as 989.4e12",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "string_type": "text",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}

#: pydantic's union-branch tags that must not appear in user-facing field paths.
_UNION_TAGS = {"str", "int", "float", "bool", "dict[str,any]", "list[int]"}


def problems(exc: ValidationError, root: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted field path, message saying what is allowed) for each error in `exc`."""
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"]
                    if not (isinstance(p, str) and (p.startswith("function-") or p in _UNION_TAGS)))
        path = prefix + ".".join(str(p) for p in loc) if loc else prefix.rstrip(".")
        kind = err["type"]
        if kind == "extra_forbidden":
            owner = _model_at(root, loc)
            allowed = list(owner.model_fields) if owner is not None else []
            msg = "unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif kind == "missing":
            msg = "required field is missing"
        elif kind == "value_error":
            msg = err["msg"].removeprefix("Value error, ")
        elif kind == "string_pattern_mismatch" and _description(root, loc):
            msg = f"must be {_description(root, loc)} (got {err.get('input')!r})"
        else:
            msg = err["msg"]
            hint = _ALLOWED_HINTS.get(kind)
            if hint:
                msg += f"; expected {hint}"
            if "input" in err and not isinstance(err["input"], (dict, list)):
                msg += f" (got {err['input']!r})"
        out.append((path, msg))
    return out
