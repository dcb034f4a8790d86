"""A TOML table decoded into a frozen dataclass by its field types, with msgspec.

msgspec checks each value against its field's type and constraints (``Annotated[int, Meta(gt=0)]``)
and fills in the defaults; what it does not do for dataclasses, refusing an unknown key, is done
here, as is turning its errors into messages that name the key (as the file spells it), what the
key accepts and the value given.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import msgspec

__all__ = ["ConfigError", "decode"]

_T = TypeVar("_T")


class ConfigError(ValueError):
    """The configuration is invalid; the message says where and why."""


def decode(raw: Mapping[str, Any], cls: type[_T], at: tuple[str, ...] = ()) -> _T:
    """``raw``, the table at ``at`` in the file, as a ``cls``. Raises ConfigError naming the
    first key it refuses."""
    _refuse_unknown_keys(raw, cls, at)
    try:
        return msgspec.convert(raw, cls, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), raw, cls, at)) from None


def _dec_hook(cls: type, value: Any) -> Any:
    if cls is Path:  # relative to the config file: resolved by the loader, which knows where
        if isinstance(value, str) and value:
            return Path(value).expanduser()
        raise ValueError("must be a non-empty path string")
    raise NotImplementedError


Steps = tuple[str | int, ...]  # keys and list indexes from the top of the file


def _refuse_unknown_keys(raw: Any, cls: Any, path: Steps) -> None:
    cls = _bare(cls)[0]
    if not isinstance(raw, dict):
        return  # not a table where one belongs: msgspec says so
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        hints = _hints(cls)
        unknown = sorted(set(raw) - set(hints))
        if unknown:
            where = f"[{'.'.join(map(str, path))}]: unknown" if path else "unknown top-level"
            keys = ", ".join(unknown)
            raise ConfigError(f"{where} key(s): {keys}")
        for key, value in raw.items():
            _refuse_unknown_keys(value, hints[key], (*path, key))
    elif get_origin(cls) in (dict, Mapping):
        for key, value in raw.items():
            _refuse_unknown_keys(value, get_args(cls)[1], (*path, key))


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _bare(cls: Any) -> tuple[Any, list[msgspec.Meta]]:
    """``cls`` without ``Annotated`` and ``| None``, and the Meta constraints it carried."""
    metas: list[msgspec.Meta] = []
    while True:
        if get_origin(cls) is Annotated:
            cls, *extras = get_args(cls)
            metas += [m for m in extras if isinstance(m, msgspec.Meta)]
        elif get_origin(cls) in (Union, types.UnionType):
            others = [a for a in get_args(cls) if a is not type(None)]
            if len(others) != 1:
                return cls, metas
            cls = others[0]
        else:
            return cls, metas


_AT = re.compile(r"(.*?)(?: - at `\$(.*)`)?", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[([0-9]+|\.\.\.)\]")
# msgspec's names of TOML values, as the file's author knows them.
_VALUES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "a list",
    "object": "a table",
    "object | null": "a table",
    "str | null": "a string",
}


def _explain(message: str, raw: Mapping[str, Any], root: type, at: Steps) -> str:
    """msgspec's ``message`` about ``raw`` (at ``at``) as a ``root``, said as the file's
    author would."""
    match = _AT.fullmatch(message)
    assert match is not None  # the pattern matches any text
    what, steps = match.groups()
    path: Steps = tuple(int(i) if i.isdigit() else k or i for k, i in _STEP.findall(steps or ""))
    if missing := re.fullmatch(r"Object missing required field `(.+)`", what):
        return f"[{'.'.join(map(str, (*at, *path)))}] needs {missing[1]}"
    cls, metas, shown = _field_at(root, path)
    described = [m.description for m in metas if m.description]
    if described:
        must = described[-1]
    elif get_origin(cls) is Literal:
        must = "one of " + ", ".join(map(repr, get_args(cls)))
    elif what.startswith("must be "):  # from _dec_hook
        must = what.removeprefix("must be ")
    else:
        expected = re.sub(r", got `[^`]*`$", "", what.removeprefix("Expected "))
        must = re.sub(r"`([^`]*)`", lambda m: _VALUES.get(m[1], m[1]), expected)
    value = _value_at(raw, path)
    got = f", got {value!r}" if shown and value is not _ABSENT else ""
    return f"{_key((*at, *path), cls)} must be {must}{got}"


def _field_at(root: type, path: Steps) -> tuple[Any, list[msgspec.Meta], bool]:
    """The type at ``path`` in ``root`` (bare), its constraints, and whether its value may be
    shown (not for a field kept out of repr: a secret or a token)."""
    cls, metas = _bare(root)
    shown = True
    for step in path:
        if isinstance(cls, type) and dataclasses.is_dataclass(cls) and isinstance(step, str):
            fields = {f.name: f for f in dataclasses.fields(cls)}
            shown = shown and fields[step].repr
            cls = _hints(cls)[step]
        elif get_origin(cls) in (dict, Mapping):
            cls = get_args(cls)[1]
        elif get_origin(cls) in (tuple, list):
            args = get_args(cls)
            cls = args[0] if len(args) == 1 or args[-1] is ... else args[int(step)]
        cls, metas = _bare(cls)
    return cls, metas, shown


_ABSENT = object()


def _value_at(raw: Any, path: Steps) -> Any:
    for step in path:
        try:
            raw = raw[step]
        except (KeyError, IndexError, TypeError):
            return _ABSENT
    return raw


def _key(path: Steps, cls: Any) -> str:
    """``path`` as the file spells it: ``[limits] max_line_bytes``, ``[places]``, ``'links'[0]``."""
    if dataclasses.is_dataclass(cls) or get_origin(cls) in (dict, Mapping):
        return f"[{'.'.join(map(str, path))}]"
    if path[-1] == "...":  # a value in a table of any keys, which msgspec does not name
        return f"[{'.'.join(map(str, path[:-1]))}] each value"
    last = max(i for i, step in enumerate(path) if isinstance(step, str) and step != "...")
    key = f"{path[last]}" + "".join(f"[{step}]" for step in path[last + 1 :])
    if last == 0:
        return f"'{path[0]}'" + key[len(str(path[0])) :]
    return f"[{'.'.join(map(str, path[:last]))}] {key}"
