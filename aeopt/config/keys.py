"""What keys a section of a schema takes, and "did you mean" for a key it does not.

Walks a pydantic schema along a dotted path the way the YAML nests: through sections (models),
through the `model:` union by its `kind`, and through the study spec's `space:` (a mapping keyed by
dotted run-config paths whose entries are searched parameters, told apart by `type`).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Tag

# The keys that pick a member of a union (`model.kind`, a space entry's `type`).
_DISCRIMINATORS = ("kind", "type", "task")


def _strip(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _tags(member: Any) -> set[str]:
    """The values that select `member` of a union: its Tag, or its discriminator field's literals."""
    tags = {m.tag for m in getattr(member, "__metadata__", ()) if isinstance(m, Tag)}
    inner = _strip(member)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        for name in _DISCRIMINATORS:
            field = inner.model_fields.get(name)
            if field is not None and get_origin(field.annotation) is Literal:
                tags.update(str(v) for v in get_args(field.annotation))
    return tags


def _members(tp: Any) -> list[Any]:
    inner = _strip(tp)
    if get_origin(inner) in (Union, types.UnionType):
        return list(get_args(inner))
    return [tp]


def _pick(tp: Any, tag: str | None, raw: Any) -> tuple[Any, bool]:
    """The union member of `tp` named by `tag` (a pydantic error location's tag; consumed), else the one
    the raw value's discriminator names, else the first (the default's). Not a union: `tp` itself."""
    members = _members(tp)
    if len(members) == 1:
        return tp, False
    for m in members:
        if tag is not None and tag in _tags(m):
            return m, True
    wanted = []
    if isinstance(raw, dict):
        wanted = [str(raw[d]) for d in _DISCRIMINATORS if d in raw]
        wanted.append("searched")  # a mapping in a space entry is a searched parameter
    for want in wanted:
        for m in members:
            if want in _tags(m):
                return m, False
    return members[0], False


def section_keys(schema: type[BaseModel], path: Sequence[str], raw: Any = None) -> list[str] | None:
    """The keys the section at `path` accepts (the top level for an empty path), or None when `path`
    does not lead to a section with fixed keys (a free mapping, a plain value, an unknown key).

    `path` may hold pydantic's union tags (model.conv_ae.c1); `raw` (the raw config dict) picks a union's
    member by its discriminator where the path holds no tag."""
    tp: Any = schema
    items = list(path)
    while True:
        member, consumed = _pick(tp, items[0] if items else None, raw)
        if consumed:
            items.pop(0)
        if consumed or member is not tp:  # a member of a union (maybe a union itself): pick again
            tp = member
            continue
        inner = _strip(tp)
        if inner is dict or get_origin(inner) is dict:
            if not items:
                return None
            key = items.pop(0)
            raw = raw.get(key) if isinstance(raw, dict) else None
            tp = get_args(inner)[1] if get_args(inner) else Any
            continue
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return None
        if not items:
            return list(inner.model_fields)
        key = items.pop(0)
        if key not in inner.model_fields:
            return None
        raw = raw.get(key) if isinstance(raw, dict) else None
        tp = inner.model_fields[key].annotation


def did_you_mean(key: str, valid: Sequence[str] | None) -> str:
    """`did you mean 'lr'? valid keys: name, lr, ...` (without the guess when none is close)."""
    if not valid:
        return ""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    guess = f"did you mean '{close[0]}'? " if close else ""
    return f"{guess}valid keys: {', '.join(valid)}"


def unknown_key_message(key: str, valid: Sequence[str] | None) -> str:
    """`unknown key; did you mean 'lr'? valid keys: name, lr, ...` for `key`, the last part of a path."""
    hint = did_you_mean(key, valid)
    return f"unknown key; {hint}" if hint else "unknown key"


def first_unknown(schema: type[BaseModel], parts: Sequence[str], raw: Any) -> int | None:
    """The index of the first part of a dotted path that the schema does not know, or None when the
    path is known as far as the schema has fixed keys (a free mapping or a plain value ends the check)."""
    for i, part in enumerate(parts):
        valid = section_keys(schema, parts[:i], raw)
        if valid is None:
            return None
        if part not in valid:
            return i
    return None
