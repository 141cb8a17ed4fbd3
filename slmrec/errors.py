"""User-facing problems: one line each, naming the file, the record, the field and what is valid."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable

from pydantic import BaseModel


MAX_MESSAGE = 600  # characters; rejected values are quoted to ~80 (slmrec.safeyaml.clip)


@dataclass(frozen=True)
class Problem:
    file: str
    message: str
    record: str | None = None
    field: str | None = None
    line: int | None = None

    def __post_init__(self) -> None:  # a message never dumps a huge rejected value
        for name, limit in (("message", MAX_MESSAGE), ("file", 300), ("record", 200),
                            ("field", 200)):
            v = getattr(self, name)
            if isinstance(v, str) and len(v) > limit:
                object.__setattr__(self, name, v[: limit - 1] + "…")

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        parts = [where]
        if self.record:
            parts.append(self.record)
        if self.field:
            parts.append(f"field '{self.field}'")
        return ": ".join(parts) + f": {self.message}"


class SlmrecError(Exception):
    """A user mistake (bad file, bad flag, unknown id). The CLI prints it and exits 2."""

    def __init__(self, problems: Iterable[Problem | str]):
        self.problems = [p if isinstance(p, Problem) else Problem("<input>", p) for p in problems]
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def one(cls, file: str, message: str, record: str | None = None, field: str | None = None):
        return cls([Problem(file, message, record, field)])


def did_you_mean(name: str, known: Iterable[str], n: int = 1) -> str:
    """' (did you mean 'x'?)' or '' when nothing is close."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    if not close:
        # Prefix and containment catch ids that differ mostly in length ("lora" vs "qlora").
        close = [k for k in known if name and (k.startswith(name) or name in k)][:n]
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"


def unknown(kind: str, name: str, known: Iterable[str]) -> str:
    return f"unknown {kind} '{name}'{did_you_mean(name, known)}"


def fields_at(root: type[BaseModel], loc: tuple) -> list[str]:
    """The field names valid at the place a pydantic error `loc` points to (for did-you-mean).

    Walks nested models; a union member named in `loc` (pydantic's tag for which member it
    tried, e.g. "CustomHardware") selects that member. Unknown steps give no suggestions."""
    model, members = root, []
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        chosen = next((m for m in members if m.__name__ == part), None)
        if chosen is not None:
            model, members = chosen, []
            continue
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        members = [a for a in (ann, *(getattr(ann, "__args__", ()) or ()))
                   if isinstance(a, type) and issubclass(a, BaseModel)]
        if not members:
            return []
        model = members[0]
    return list(model.model_fields)
