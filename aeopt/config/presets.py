"""The run configs and study specs that ship with aeopt, found by name from any folder.

`aeopt train conv_ae` and `aeopt study create conv_ae` work outside the checkout: an argument that is a
file is read as a file (a path wins), and a bare name (no folder, no .yaml) that is not a file names a
shipped preset. The files live at the top of the repository (configs/, studies/); aeopt/presets/configs
and aeopt/presets/studies are links to those folders, so that the installed package carries the same
files (pyproject.toml's package-data takes only their *.yaml: never a database or artifacts).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import yaml

from aeopt.errors import ConfigError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class PresetKind:
    folder: str  # under aeopt/presets/ (and at the top of the repository)
    noun: str  # in messages: "run config", "study spec"
    command: str  # what takes it, for the hints

    @property
    def where(self) -> Path:
        return PRESETS_DIR / self.folder


RUN_CONFIG = PresetKind("configs", "run config", "aeopt train")
STUDY_SPEC = PresetKind("studies", "study spec", "aeopt study create")
KINDS = (RUN_CONFIG, STUDY_SPEC)


@dataclass(frozen=True)
class Preset:
    kind: PresetKind
    name: str
    path: Path
    description: str


def preset_paths(kind: PresetKind) -> list[Path]:
    return sorted(kind.where.glob("*.yaml")) if kind.where.is_dir() else []


def preset_names(kind: PresetKind) -> list[str]:
    return [p.stem for p in preset_paths(kind)]


def describe(path: Path) -> str:
    """One line about a YAML file: its `description:`, else the first sentence of its leading comment."""
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("description"), str) and data["description"].strip():
        return " ".join(data["description"].split())
    lead: list[str] = []
    for line in text.splitlines():
        body = line[1:] if line.startswith("#") else None
        # The leading paragraph ends at the first line that is not a comment, an empty comment line, or an
        # indented example (`#   aeopt export ...`).
        if body is None or not body.strip() or body.startswith("   "):
            break
        lead.append(body.strip())
    return first_clause(" ".join(lead))


# Words whose full stop is not the end of a sentence ("Rosca et al. 2017", "e.g. the VAE").
_ABBREVIATIONS = ("al.", "e.g.", "i.e.", "cf.", "vs.", "etc.", "fig.", "eq.", "sec.", "no.")


def first_clause(text: str) -> str:
    """Up to the first colon, semicolon or full stop followed by a space, outside parentheses and not the
    stop of an abbreviation: "... an image critic (alpha-GAN, Rosca et al. 2017): a second ..." was cut at
    "al." and `aeopt configs` showed "(alpha-GAN, Rosca et al" (nor "1e-3", which has no space after)."""
    depth = 0
    for i, char in enumerate(text):
        depth = depth + 1 if char in "([" else max(depth - 1, 0) if char in ")]" else depth
        if char not in ".:;" or depth or not text[i + 1:i + 2].isspace():
            continue
        word = text[:i + 1].rsplit(None, 1)[-1].lstrip("([").lower()
        if char == "." and word in _ABBREVIATIONS:
            continue
        return text[:i]
    return text.rstrip(".:;")


# Keys only a study spec has: a file with one of them given to `aeopt train` is a spec, not a run config.
SEARCH_KEYS = ("space", "enqueue", "sampler", "pruner", "cv")


def refuse_study_spec(raw: dict, path: str | Path, command: str, takes: str = "a run config") -> None:
    """One line when a run-config command (`command`) is given a study spec: it said "name: unknown key"."""
    key = next((k for k in SEARCH_KEYS if k in raw), None)
    if key is not None:
        raise ConfigError(f"{path} is a study spec (it has `{key}:`): use `{STUDY_SPEC.command} {path}`; "
                          f"`{command}` takes {takes}")


def list_presets() -> list[Preset]:
    return [Preset(kind, p.stem, p.resolve(), describe(p)) for kind in KINDS for p in preset_paths(kind)]


def is_bare_name(arg: str | Path) -> bool:
    """A name, not a path: no folder part and no .yaml suffix (conv_ae, not conv_ae.yaml)."""
    text = str(arg)
    # Judged on the text: "./conv_ae" names a file here, though pathlib drops the "./".
    return bool(text) and not any(sep in text for sep in "/\\") and Path(text).suffix not in _SUFFIXES \
        and text not in (".", "..", "~")


def resolve(arg: str | Path, kind: PresetKind) -> Path:
    """The file `arg` names: itself when it is a file (a path wins), else the shipped preset of that bare
    name, else the folder or whatever else is there (read_yaml says what it is).

    Only a file wins over a preset: a folder named conv_ae in the current folder (a run's output, say)
    hid the shipped conv_ae with "a folder, not a file". A miss is one line that says where aeopt looked
    and lists the shipped names."""
    p = Path(arg).expanduser()
    if p.is_file():
        return p
    if is_bare_name(arg):
        preset = kind.where / f"{arg}.yaml"
        if preset.is_file():
            return preset.resolve()
    if p.exists():
        return p
    raise ConfigError(missing_message(arg, kind))


def missing_message(arg: str | Path, kind: PresetKind) -> str:
    """Where aeopt looked for `arg` (the path from here; for a bare name, the shipped presets too), the
    shipped names, and the closest one."""
    names = preset_names(kind)
    here = Path(arg).expanduser().absolute()
    stem = Path(arg).stem
    close = difflib.get_close_matches(stem, names, n=1, cutoff=0.6)
    if is_bare_name(arg):
        looked = f"no such file ({here}) and no shipped {kind.noun} of that name (in {kind.where.resolve()})"
    else:
        looked = f"no such file (looked for {here})"
    other = next((k for k in KINDS if k is not kind and is_bare_name(arg) and stem in preset_names(k)), None)
    if not is_bare_name(arg) and stem in names:
        hint = f"the shipped {kind.noun} of that name runs with `{kind.command} {stem}`"
    elif other is not None:  # `aeopt train seed_grid`: a shipped study spec, not a run config
        hint = (f"{stem} is a shipped {other.noun}: `{other.command} {stem}`; "
                f"shipped {kind.noun}s: {', '.join(names)}")
    elif close:
        hint = f"did you mean '{close[0]}'? shipped {kind.noun}s: {', '.join(names)}"
    elif names:
        hint = f"shipped {kind.noun}s: {', '.join(names)} (`aeopt configs` lists them)"
    else:
        hint = f"pass the path of a {kind.noun} YAML"
    return f"{arg}: {looked}; {hint}"
