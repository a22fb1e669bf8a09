"""The table of every setting, generated from `trading.config.Settings`, and its place in README.md.

`python -m workers.settings_table` prints the table; `--write` puts it into README.md between the
marker comments; `--check` exits 1 when the README's table differs from the generated one (the test
suite runs the same comparison, so the README cannot drift from the settings class). The table is
built from the class alone (names, defaults, types, bounds, docstrings), never from the environment,
so it is the same on every machine and shows no value anyone has set.
"""

from __future__ import annotations

import argparse
import enum
import os
import socket
import sys
import types
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from trading.config import Settings

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"
COMMAND = "python -m workers.settings_table --write"


class TableError(RuntimeError):
    """The README has no place for the table (or a malformed one); the message says what is wrong."""


def env_names(name: str, field: FieldInfo) -> list[str]:
    """The environment variables that set `name` (an alias list wins over the field's own name)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice).upper() for choice in alias.choices]
    if isinstance(alias, str):
        return [alias.upper()]
    return [name.upper()]


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, Path):
        try:  # a path inside the repository is shown relative to it (the same on every machine)
            return value.relative_to(REPO).as_posix() + "/"
        except ValueError:
            return str(value)
    if isinstance(value, list | tuple):
        return ",".join(_value_text(v) for v in value)
    return str(value)


def default_text(field: FieldInfo) -> str:
    """The default as a user would write it, secrets hidden, machine-dependent defaults described."""
    if _is_secret(field.annotation):
        return "not set" if field.default in (None, PydanticUndefined) else "(hidden)"
    if field.default_factory is socket.gethostname:  # differs per machine: say what it is
        return "this machine's host name"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is None:
        return "not set"
    text = _value_text(value)
    return f"`{text}`" if text else "empty"


def _base_type(annotation: Any) -> tuple[str, bool]:
    """(words for the type, whether it is optional)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        text, _ = _base_type(inner[0]) if len(inner) == 1 else (" or ".join(map(str, inner)), False)
        return text, type(None) in get_args(annotation)
    if origin is Literal:
        return _choices([str(a) for a in get_args(annotation)]), False
    if origin is list:
        return "list, comma-separated", False
    if get_origin(annotation) is not None and hasattr(annotation, "__metadata__"):
        return _base_type(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _choices([str(m.value) for m in annotation]), False
    words = {
        bool: "true/false",
        int: "integer",
        float: "number",
        Decimal: "decimal",
        str: "text",
        Path: "path",
        SecretStr: "secret",
    }
    return words.get(annotation, getattr(annotation, "__name__", str(annotation))), False


def _choices(values: list[str]) -> str:
    quoted = [f"`{v}`" for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _bounds(field: FieldInfo) -> str:
    low = high = None
    for m in field.metadata:
        if isinstance(m, annotated_types.Ge):
            low = ("≥", m.ge)
        elif isinstance(m, annotated_types.Gt):
            low = (">", m.gt)
        elif isinstance(m, annotated_types.Le):
            high = ("≤", m.le)
        elif isinstance(m, annotated_types.Lt):
            high = ("<", m.lt)
    if low and high and low[0] == "≥" and high[0] == "≤":
        return f"{_value_text(low[1])}…{_value_text(high[1])}"
    return ", ".join(f"{b[0]} {_value_text(b[1])}" for b in (low, high) if b is not None)


def type_text(field: FieldInfo) -> str:
    text, optional = _base_type(field.annotation)
    bounds = _bounds(field)
    if bounds:
        text += f" {bounds}"
    return text + (", optional" if optional else "")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def rows() -> list[tuple[str, str, str, str]]:
    """(variables, default, type, description) for every setting, in the class's order."""
    out = []
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise TableError(
                f"setting {name} has no description: give it a docstring in trading/config.py "
                "(the line below the field)"
            )
        variables = " or ".join(f"`{v}`" for v in env_names(name, field))
        out.append((variables, default_text(field), type_text(field), _cell(field.description)))
    return out


def render() -> str:
    """The markdown table, markers excluded."""
    lines = ["| variable | default | type | description |", "|---|---|---|---|"]
    lines += [f"| {v} | {_cell(d)} | {_cell(t)} | {desc} |" for v, d, t, desc in rows()]
    return "\n".join(lines) + "\n"


def _span(text: str, path: Path) -> tuple[int, int]:
    """Where the table lies in `text`: the offsets just after the start marker's line and of the end
    marker."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise TableError(
            f"{path} must hold each marker exactly once, {START} and then {END}, on lines of their own"
        )
    start, end = text.index(START), text.index(END)
    if end < start:
        raise TableError(f"{path}: {END} comes before {START}")
    return start + len(START) + 1, end


def current(path: Path = README) -> str:
    """The table now in the README (between the markers)."""
    text = path.read_text(encoding="utf-8")
    a, b = _span(text, path)
    return text[a:b]


def write(path: Path = README) -> bool:
    """Put the generated table into the README; True when it changed. The file is replaced whole (a
    half-written README would lose whatever followed the table)."""
    text = path.read_text(encoding="utf-8")
    a, b = _span(text, path)
    table = render()
    if text[a:b] == table:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text[:a] + table + text[b:], encoding="utf-8")
    tmp.replace(path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.settings_table",
        description="The table of every setting (from trading/config.py). Without options: print it.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="put it into the README between the markers")
    mode.add_argument("--check", action="store_true", help="exit 1 if the README's table differs")
    parser.add_argument("--readme", type=Path, default=README, help="default: the repository's README.md")
    args = parser.parse_args(argv)
    try:
        if args.write:
            changed = write(args.readme)
            print(f"{args.readme}: settings table {'updated' if changed else 'already up to date'}")
        elif args.check:
            if current(args.readme) != render():
                print(
                    f"{args.readme}: the settings table differs from trading/config.py; run `{COMMAND}`",
                    file=sys.stderr,
                )
                return 1
            print(f"{args.readme}: settings table up to date")
        else:
            sys.stdout.write(render())
    except (TableError, OSError) as exc:
        print(f"settings table: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
