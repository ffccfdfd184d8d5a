"""Every field of a job config, for `--help`: its dotted name, default and description.

The description is the field's `Field(description=...)` where it has one, else the comment written with it in
the config class (the `#` lines just above the field, or the comment at the end of its line): the documentation
stays where a reader of the code finds it, and `--help` shows the same words.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize
import typing
from typing import Any


FIELD_LINE = re.compile(r"^    (\w+)\s*:")  # a field of a class body: four spaces, a name, a colon


def _trailing_comment(line: str) -> str:
    """The comment at the end of a line of code ('' if none, or if the line does not tokenize on its own)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line).readline))
    except (tokenize.TokenError, SyntaxError):
        return ""
    return next((t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT), "")


def _comments(cls: type) -> dict[str, str]:
    """{field name: the comment written with it} from the class's source: the `#` lines just above the field,
    else the comment ending its line (empty where the class has no source)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    found: dict[str, str] = {}
    above: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        field = FIELD_LINE.match(line)
        if field:
            found[field.group(1)] = " ".join(above) or _trailing_comment(line)
        if stripped:  # any line of code ends a block of comments
            above = []
    return found


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        default = field.default
        return getattr(default, "default", default)  # a pydantic FieldInfo holds its own default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def _description(field: dataclasses.Field, comments: dict[str, str]) -> str:
    info = field.default if field.default is not dataclasses.MISSING else None
    return getattr(info, "description", None) or comments.get(field.name, "")


def field_docs(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default as shown, description) for every leaf field of a config class, sections first
    expanded into their own fields, in declaration order."""
    hints = typing.get_type_hints(cls)
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's comment wins over its base's
        if dataclasses.is_dataclass(klass):
            comments.update(_comments(klass))
    out = []
    for field in dataclasses.fields(cls):
        kind = hints.get(field.name)
        name = f"{prefix}{field.name}"
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            out += field_docs(kind, f"{name}.")
            continue
        out.append((name, repr(_default(field)), _description(field, comments)))
    return out


def help_text(cls: type) -> str:
    """The fields block of `--help`: one line per field, its description wrapped under it."""
    import textwrap

    lines = ["config fields (section.field=value on the command line overrides the file):"]
    for name, default, about in field_docs(cls):
        lines.append(f"  {name} = {default}")
        if about:
            lines += textwrap.wrap(about, 100, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)
