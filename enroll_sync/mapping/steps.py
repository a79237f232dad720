"""Transformation steps: the contract for built-in and plugin steps.

A Transformation row is a chain of steps; each step turns the current value into
the next one. A step class declares what it is (``kind``, ``label``, ``help``) and
its settings (``params``: a list of ``Param`` the web UI renders as a form). It is
built once per saved mapping with ``Step(**settings)`` and then applied to every
record with ``step.apply(value, ctx)``.

Rules for step authors:

- Validate and prepare everything in ``setup()`` (compile a regex, parse a
  format, build a lookup table); raise ``StepConfigError(message)`` for a setting
  that cannot work. ``setup`` runs once; ``apply`` runs per record and must stay
  cheap.
- ``apply`` raises ``StepError(message)`` when it cannot transform a value (a date
  that does not parse). The record then fails with the message shown on the row;
  never return a half-right value. Any other exception is reported as a bug in the
  step, also failing the record.
- A blank input (None or "") usually passes through as None; steps that make a
  value from nothing (Value Input, Today, Join, Pick...) say so in their help.
- ``ctx`` is a ``StepContext``: ``ctx.source`` / ``ctx.get(key)`` for the record's
  source values, ``ctx.today``, ``ctx.school_year``, ``ctx.insert``, ``ctx.extra``
  and ``ctx.warn(message)``.
- Steps must be deterministic and keep no state between records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from .context import StepContext, is_blank

__all__ = ["Param", "PARAM_TYPES", "Step", "StepConfigError", "StepContext", "StepError", "is_blank"]


class StepConfigError(ValueError):
    """A step's settings cannot work (unknown format, bad regex...). Raised at compile time."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class StepError(ValueError):
    """A step cannot transform this record's value. Raised by ``apply``."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


#: what the web UI knows how to render
#: text: one line; textarea: several lines; select: one of ``choices``;
#: field: one From Enroll Field key; fields: an ordered list of field keys;
#: bool: a checkbox; int: a whole number; codes: an answer -> code table.
PARAM_TYPES = ("text", "textarea", "select", "field", "fields", "bool", "int", "codes")

_TRUE = frozenset({"1", "true", "on", "yes", "y", "t"})
_FALSE = frozenset({"", "0", "false", "off", "no", "n", "f", "none"})


@dataclass(frozen=True)
class Param:
    """One setting of a step, rendered as one form field.

    ``choices``: (value, label) pairs for ``select``. ``default``: used when the
    setting is absent or blank. ``required``: blank is a StepConfigError.
    ``min``/``max``: bounds of an ``int``. ``show_if``: (other_key, values) — show
    this field only while setting ``other_key`` is one of ``values`` (the UI's
    business; the engine ignores hidden settings it does not need).
    """

    key: str
    label: str
    type: str = "text"
    choices: tuple[tuple[str, str], ...] = ()
    default: Any = None
    help: str = ""
    required: bool = False
    placeholder: str = ""
    min: int | None = None
    max: int | None = None
    show_if: tuple[str, tuple[str, ...]] | None = None

    def __post_init__(self):
        if self.type not in PARAM_TYPES:
            raise ValueError(f"Param {self.key!r}: unknown type {self.type!r}")

    def to_dict(self) -> dict:
        """JSON-safe description for the UI."""
        return {
            "key": self.key, "label": self.label, "type": self.type,
            "choices": [list(c) for c in self.choices], "default": self.default,
            "help": self.help, "required": self.required, "placeholder": self.placeholder,
            "min": self.min, "max": self.max,
            "show_if": [self.show_if[0], list(self.show_if[1])] if self.show_if else None,
        }

    def clean(self, raw: Any) -> Any:
        """Turn a saved or posted value into the step's setting; StepConfigError if unusable.

        Accepts both JSON values and the strings an HTML form posts ("on" for a
        checkbox, "a, b" or one per line for ``fields``).
        """
        t = self.type
        if raw is None or (isinstance(raw, str) and raw == "" and t not in ("text", "textarea")):
            raw = self.default
        if t in ("text", "textarea"):
            value = "" if raw is None else str(raw)
            if self.required and value.strip() == "":
                raise StepConfigError(f"{self.label} is required.")
            return value
        if t == "select":
            value = "" if raw is None else str(raw)
            allowed = [c[0] for c in self.choices]
            if value not in allowed:
                if value == "" and not self.required:
                    return value
                shown = ", ".join(c[1] or c[0] for c in self.choices)
                raise StepConfigError(f"{self.label}: {value!r} is not one of {shown}.")
            return value
        if t == "field":
            value = "" if raw is None else str(raw).strip()
            if self.required and not value:
                raise StepConfigError(f"{self.label}: choose a field.")
            return value
        if t == "fields":
            if raw is None:
                items: list = []
            elif isinstance(raw, str):
                items = raw.replace("\n", ",").split(",")
            elif isinstance(raw, (list, tuple)):
                items = list(raw)
            else:
                raise StepConfigError(f"{self.label}: expected a list of fields.")
            value = [str(i).strip() for i in items if i is not None and str(i).strip()]
            if self.required and not value:
                raise StepConfigError(f"{self.label}: choose at least one field.")
            return value
        if t == "bool":
            if isinstance(raw, bool):
                return raw
            if raw is None:
                return False
            s = str(raw).strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise StepConfigError(f"{self.label}: {raw!r} is not yes or no.")
        if t == "int":
            if raw is None or raw == "":
                if self.required:
                    raise StepConfigError(f"{self.label} is required.")
                return None
            if isinstance(raw, bool):
                raise StepConfigError(f"{self.label}: {raw!r} is not a whole number.")
            try:
                value = int(str(raw).strip()) if not isinstance(raw, int) else raw
            except ValueError:
                raise StepConfigError(f"{self.label}: {raw!r} is not a whole number.") from None
            if self.min is not None and value < self.min:
                raise StepConfigError(f"{self.label} must be at least {self.min}.")
            if self.max is not None and value > self.max:
                raise StepConfigError(f"{self.label} must be at most {self.max}.")
            return value
        if t == "codes":
            return clean_codes(raw, self.label)
        raise StepConfigError(f"{self.label}: unsupported setting type {t!r}.")  # pragma: no cover


def clean_codes(raw: Any, label: str = "Codes") -> dict[str, str]:
    """An answer -> code table from a dict, (answer, code) pairs or {answer, code} dicts."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    elif isinstance(raw, (list, tuple)):
        pairs = []
        for item in raw:
            if isinstance(item, Mapping) and "answer" in item:
                pairs.append((item.get("answer"), item.get("code")))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                pairs.append((item[0], item[1]))
            else:
                raise StepConfigError(f"{label}: each entry needs an answer and a code.")
    else:
        raise StepConfigError(f"{label}: expected a table of answers and codes.")
    out: dict[str, str] = {}
    for answer, code in pairs:
        if answer is None:
            raise StepConfigError(f"{label}: an entry has no answer.")
        if isinstance(code, (dict, list, tuple)):
            raise StepConfigError(f"{label}: the code for {answer!r} must be text.")
        out[str(answer)] = "" if code is None else str(code)
    return out


class Step:
    """Base class of a transformation step. See the module docstring for the rules.

    Subclasses set ``kind`` (stable id stored in saved mappings; never rename it),
    ``label`` (shown in the step picker), ``help`` (one sentence), ``params`` and
    implement ``apply``; optionally ``setup``.
    """

    kind: ClassVar[str] = ""
    label: ClassVar[str] = ""
    help: ClassVar[str] = ""
    params: ClassVar[Sequence[Param]] = ()

    def __init__(self, **settings: Any):
        known = {p.key for p in self.params}
        unknown = sorted(k for k in settings if k not in known)
        if unknown:
            raise StepConfigError(f"{self.label or self.kind}: unknown setting(s) {', '.join(unknown)}.")
        options = {}
        for p in self.params:
            options[p.key] = p.clean(settings.get(p.key))
        #: the cleaned settings, keyed by Param.key
        self.options: dict[str, Any] = options
        self.setup()

    def setup(self) -> None:
        """Prepare for ``apply`` (compile, precompute); raise StepConfigError if unusable."""

    def apply(self, value: Any, ctx: StepContext) -> Any:
        """Return the transformed value; raise StepError if this value cannot be transformed."""
        raise NotImplementedError

    def fields_used(self) -> list[str]:
        """Source keys this step reads (from its ``field``/``fields`` settings)."""
        out: list[str] = []
        for p in self.params:
            v = self.options.get(p.key)
            if p.type == "field" and v:
                out.append(v)
            elif p.type == "fields" and v:
                out.extend(v)
        return out

    def to_dict(self) -> dict:
        """The saved form of this step: {"kind": ..., **settings}."""
        return {"kind": self.kind, **self.options}

    @classmethod
    def describe(cls) -> dict:
        """JSON-safe description the web UI renders the step's form from."""
        return {"kind": cls.kind, "label": cls.label, "help": cls.help,
                "params": [p.to_dict() for p in cls.params]}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.options!r}>"
