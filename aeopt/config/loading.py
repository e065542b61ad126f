"""YAML in and out, `--set key=value` by dotted path, and pydantic errors as one line per field."""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from aeopt.config.keys import first_unknown, section_keys, unknown_key_message
from aeopt.config.models import MODEL_KINDS
from aeopt.errors import ConfigError

# Discriminator tags pydantic puts in error locations (model.conv_ae.c1, space.x.searched.int.low):
# not part of the YAML path.
_TAGS = (*MODEL_KINDS, "int", "float", "categorical", "searched", "fixed")
# Names pydantic gives the validators it wraps a field in (tagged-union[...], function-before[...]):
# its internals, never a key the user wrote.
_INTERNAL = re.compile(r"^[a-z-]+\[.*\]$")
# Sections keyed by dotted run-config paths (space: {model.c1: ...}): `--set space.model.c1.high=32`
# names the entry 'model.c1', and a new entry's key is the whole rest of the path.
_DOTTED_SECTIONS = ("space",)
# The fields of a searched space entry: `--set space.X.high=...` edits an entry, it cannot add one.
_PARAM_FIELDS = ("type", "low", "high", "step", "log", "choices")


def _split_key(d: dict[str, Any], dotted: str) -> tuple[str, str | None]:
    """First key of `dotted` in `d`, preferring the longest match (space keys contain dots)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if head in d:
            return head, (".".join(parts[i:]) or None)
    return parts[0], (".".join(parts[1:]) or None)


def set_path(d: dict[str, Any], dotted: str, value: Any, *, must_exist: bool = False) -> None:
    """Set `dotted` (sections joined by dots) in the raw dict `d`, making missing sections unless
    `must_exist`."""
    node, rest, done = d, dotted, []
    while True:
        head, rest = _split_key(node, rest)
        if rest is None:
            if must_exist and head not in node:
                raise ConfigError(f"unknown key '{dotted}'")
            node[head] = value
            return
        done.append(head)
        child = node.get(head)
        if child is None and not must_exist:
            child = node[head] = {}
        if child is None:
            raise ConfigError(f"unknown key '{dotted}'")
        if not isinstance(child, dict):
            where = ".".join(done)
            raise ConfigError(f"{where} is a value ({child!r}), not a section; "
                              f"set it whole: --set {where}=VALUE")
        node = child


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, for example --set data.train_subset=6000")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _unknown_in(schema: type[BaseModel], path: list[str], raw: Any) -> str | None:
    """What is wrong with the dotted path `path` in `schema` (an unknown key, with the closest known one
    and the valid keys of its section), or None when the schema knows it."""
    bad = first_unknown(schema, path, raw)
    if bad is None:
        return None
    message = unknown_key_message(path[bad], section_keys(schema, path[:bad], raw))
    if bad < len(path) - 1:  # name the key when it is not the last part: `--set optmi.lr`
        message = message.replace("unknown key", f"unknown key '{path[bad]}'", 1)
    return message


def _set_dotted_entry(section: dict[str, Any], name: str, rest: str, value: Any,
                      schema: type[BaseModel], raw: dict[str, Any]) -> None:
    """`--set NAME.REST=VALUE` in a section whose keys are dotted paths (the study spec's space)."""
    entry, tail = _split_key(section, rest)
    if entry in section:
        if tail is None:
            section[entry] = value
        elif isinstance(section[entry], dict):
            field = tail.split(".")[0]
            valid = section_keys(schema, [name, entry], raw)
            if valid is not None and field not in valid:
                raise ConfigError(unknown_key_message(field, valid))
            set_path(section[entry], tail, value)
        else:
            raise ConfigError(f"{name}.{entry} is the fixed value {section[entry]!r}; replace it whole, "
                              f"for example --set {name}.{entry}='{{type: int, low: 8, high: 32}}'")
        return
    head, _, last = rest.rpartition(".")
    if head and last in _PARAM_FIELDS:
        close = difflib.get_close_matches(head, list(section), n=1, cutoff=0.8)
        meant = f" (did you mean '{name}.{close[0]}'?)" if close else ""
        raise ConfigError(f"{name}.{head} is not in the {name} yet{meant}; add it whole, for example "
                          f"--set {name}.{head}='{{type: int, low: 8, high: 32}}'")
    section[rest] = value


def apply_overrides(d: dict[str, Any], overrides: list[str], schema: type[BaseModel]) -> dict[str, Any]:
    """Apply `--set key=value` items to a raw config dict; keys must name fields of `schema`.

    An unknown key is caught here, before validation, so that the error names the `--set` that made
    it, the closest known key and the valid keys of that section."""
    d = copy.deepcopy(d)
    for item in overrides:
        key, value = parse_override(item)
        top, _, rest = key.partition(".")
        try:
            if top in _DOTTED_SECTIONS and top in schema.model_fields and rest:
                section = d.get(top)
                if section is None:
                    section = d[top] = {}
                if not isinstance(section, dict):
                    raise ConfigError(f"'{top}' is not a mapping")
                _set_dotted_entry(section, top, rest, value, schema, d)
            else:
                problem = _unknown_in(schema, key.split("."), d)
                if problem:
                    raise ConfigError(problem)
                set_path(d, key, value)
        except ConfigError as exc:
            raise ConfigError(f"--set {key}: {exc}") from None
    return d


# Pydantic's types for "this should have been a section": its messages name classes (CVConfig).
_NOT_A_SECTION = ("model_type", "model_attributes_type", "dict_type")


def _raw_loc(err: Any) -> list[str]:
    """The error's location with the union tags kept (the schema walk needs them), pydantic's own
    validator names dropped."""
    return [str(p) for p in err["loc"] if not _INTERNAL.match(str(p))]


def _shown(parts: list[str]) -> str:
    """A location as the YAML writes it: without the union tags (model.conv_ae.c1 -> model.c1)."""
    return ".".join(p for p in parts if p not in _TAGS)


def _unknown_line(err: Any, errors: list[Any], schema: type[BaseModel] | None) -> str:
    """Unknown keys of one section, on one line: the closest known key for one, the list for several
    (a model kind switched under keys of the old one), and the valid keys of that section."""
    section = _raw_loc(err)[:-1]
    keys = [_raw_loc(e)[-1] for e in errors if e["type"] == "extra_forbidden" and _raw_loc(e)[:-1] == section]
    valid = section_keys(schema, section) if schema is not None else None
    if len(keys) == 1:
        return f"{_shown([*section, keys[0]])}: {unknown_key_message(keys[0], valid)}"
    kind = next((f" for model kind '{p}'" for p in section if p in MODEL_KINDS), "")
    known = f"; valid keys: {', '.join(valid)}" if valid else ""
    return f"{_shown(section) or '(top level)'}: unknown keys {', '.join(keys)}{kind}{known}"


def _closest_choice(given: Any, expected: str) -> str:
    """`; did you mean 'fashion_mnist'?` when `given` is close to one of the quoted choices in `expected`."""
    close = difflib.get_close_matches(str(given), re.findall(r"'([^']*)'", expected), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _field_line(err: Any, field: str, schema: type[BaseModel] | None) -> str:
    """One bad field in the user's terms: what was given, and what was expected."""
    msg = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        tag = err.get("ctx", {}).get("discriminator", "kind").strip("'")
        if err["type"] == "union_tag_not_found":
            return f"{field}.{tag} is required"
        got = given.get(tag) if isinstance(given, dict) else given
        expected = err.get("ctx", {}).get("expected_tags", "")
        return f"{field}.{tag} = {got!r}: expected one of {expected}{_closest_choice(got, expected)}"
    if err["type"] == "literal_error":
        return f"{field} = {given!r}: {msg}{_closest_choice(given, err.get('ctx', {}).get('expected', ''))}"
    if err["type"] == "missing":
        return f"{field} is required"
    if err["type"] in _NOT_A_SECTION:
        valid = section_keys(schema, _raw_loc(err)) if schema is not None else None
        return f"{field} = {given!r}: expected a section" + (f" with keys {', '.join(valid)}" if valid else
                                                              " (a mapping)")
    if isinstance(given, dict):
        # A check across fields of a section: the whole section is not worth printing.
        return f"{field}: {msg}"
    return f"{field} = {given!r}: {msg}"


def format_validation_error(exc: ValidationError, source: str, schema: type[BaseModel] | None = None) -> str:
    """One line per bad field (per section for unknown keys), naming the field and the value, in the
    YAML's terms: no union tags, no pydantic class or validator names.

    `schema` (the one validated against) lets an unknown key name the valid keys of its section."""
    lines = []
    errors = exc.errors()
    for err in errors:
        field = _shown(_raw_loc(err)) or "(top level)"
        if not _raw_loc(err) and isinstance(err.get("input"), dict):
            # A check across sections names its own field (space.model.c1: ...).
            lines.append(f"{source}: {err['msg'].removeprefix('Value error, ')}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{source}: {_unknown_line(err, errors, schema)}")
        else:
            lines.append(f"{source}: {_field_line(err, field, schema)}")
    return "\n".join(dict.fromkeys(lines))


def validate(schema: type[BaseModel], d: Any, source: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (model, data, budget, optim), "
                          f"got {type(d).__name__}")
    try:
        return schema.model_validate(d)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, schema)) from None


_STR_TAGS = ("tag:yaml.org,2002:str", "tag:yaml.org,2002:merge")  # a name, or YAML's `<<` merge key
_READS_AS = {"tag:yaml.org,2002:bool": "a boolean", "tag:yaml.org,2002:int": "a number",
             "tag:yaml.org,2002:float": "a number", "tag:yaml.org,2002:null": "null",
             "tag:yaml.org,2002:timestamp": "a date"}


def _odd_key(node: yaml.Node, where: str = "", seen: set[int] | None = None) -> str | None:
    """What is wrong with the first key in the YAML tree `node` that is not a string, or None.

    YAML 1.1 reads `no: 3` as {False: 3} and `1: 2` as {1: 2}: every key aeopt reads is a name, and a key
    that is not one fails deep inside the key checks (difflib on a bool) or gives pydantic's "Keys should
    be strings" under a made-up location. The node tree keeps the key as written, for the message."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias: checked where its anchor is
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if not (isinstance(key, yaml.ScalarNode) and key.tag in _STR_TAGS):
                line, in_section = key.start_mark.line + 1, f" (in {where})" if where else ""
                if not isinstance(key, yaml.ScalarNode):
                    return f"line {line}: a key{in_section} is a list or mapping; keys are names"
                reads = _READS_AS.get(key.tag, "not a name")
                if key.tag == "tag:yaml.org,2002:bool":
                    value = yaml.safe_load(key.value)
                    reads = f"{str(value).lower()} (yes/no/on/off are booleans)"
                return (f"line {line}: YAML reads the key {key.value}{in_section} as {reads}, not a name; "
                        f"quote it: '{key.value}'")
            problem = _odd_key(value, f"{where}.{key.value}" if where else str(key.value), seen)
            if problem:
                return problem
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problem = _odd_key(item, f"{where}[{i}]", seen)
            if problem:
                return problem
    return None


def _check_keys(data: Any, text: str, p: Path) -> None:
    """One line for a key that is not a string (see _odd_key); the node tree is built only then."""
    def has_odd(x: Any) -> bool:
        if isinstance(x, dict):
            return any(not isinstance(k, str) or has_odd(v) for k, v in x.items())
        return isinstance(x, list) and any(has_odd(v) for v in x)

    if has_odd(data):
        problem = _odd_key(yaml.compose(text, Loader=yaml.SafeLoader))
        raise ConfigError(f"{p}: {problem or 'a key is not a string; quote it'}")


# What to pass instead of a missing or empty file, where a shipped config's name also works (most readers).
SHIPPED_HINT = "pass the path of a YAML file, or the name of a shipped one (`aeopt configs` lists them)"


def read_yaml(path: str | Path, *, first_of_list: bool = False, hint: str | None = None) -> dict[str, Any]:
    """The mapping in a YAML file; with `first_of_list`, the first entry of a list of them (an
    `aeopt export --top K` file holds the K best, best first). `hint`: what to pass instead of a missing
    or empty file, for a reader that resolves no shipped names (the default hint offers them)."""
    p = Path(path)
    if not p.is_file():
        looked = p.expanduser().absolute()
        what = "a folder, not a file" if p.is_dir() else f"no such file (looked for {looked})"
        raise ConfigError(f"{p}: {what}; {hint or SHIPPED_HINT}")
    try:
        text = p.read_text()
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file; pass a YAML config") from None
    if data is None:
        raise ConfigError(f"{p}: the file is empty; " + (hint or "start from a copy of a shipped one "
                                                         "(`aeopt configs` lists them with their paths)"))
    _check_keys(data, text, p)
    if first_of_list and isinstance(data, list) and data and isinstance(data[0], dict):
        return data[0]
    if isinstance(data, list) and data and all(isinstance(e, dict) and "model" in e for e in data):
        raise ConfigError(f"{p}: a list of {len(data)} configs (an `aeopt export --top K` file?); "
                          "export one with `aeopt export --study NAME -o best.yaml`")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections (model, data, budget, optim), "
                          f"got {type(data).__name__}")
    return data


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
