"""The mapping engine: a saved mapping compiled once into a function.

``compile_mapping(rows, target_fields, steps)`` turns the saved rows (see
docs/architecture.md) into a ``CompiledMapping``. Calling it with a record's flat
source values gives a ``MappingResult``: the adapter payload (dotted To Field key
-> value) and the per-field problems. The Mapped Value column, Send Test Record and
bulk sync all call the same object, so what is previewed is what is sent.

Compiling never raises for a bad row (unknown step, bad regex, unknown field,
missing From field): the row becomes one that reports its problem on every record,
so the editor can show it on the row and records fail instead of sending wrong data.

Problem codes (``Problem.code``):

=================  ========  ==================================================
config             error     the row itself is wrong (shown on every record)
config_warning     warning   the row works but looks wrong (``config_problems`` only)
step_error         error     a transformation step could not apply
step_bug           error     a step raised something other than StepError
unmatched_code     error     Match Codes answer without a code, policy "fail"
unmatched_code     warning   ... policy "fallback" or "blank"
too_long           error     longer than the To Field's max_length
invalid_code       error     not one of the To Field's codes
invalid_type       error     not a date / integer / number / boolean as the field needs
required           error     required on insert and blank (warning when insert is unknown)
=================  ========  ==================================================

Blank values (None, "", whitespace only, empty list) are left out of the payload.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from ..adapters import FieldSection, TargetField
from .codes import UNMATCHED_POLICIES, CodeMatcher
from .context import MappingContext, StepContext, is_blank
from .steps import Step, StepConfigError, StepError, clean_codes

__all__ = [
    "ERROR", "WARNING", "MAPPING_TYPES", "SYSTEM_PREFIXES", "CompiledMapping", "CompiledRow",
    "MappingResult", "Problem", "RowResult", "TraceStep", "compile_mapping", "compile_row",
    "flatten_targets", "step_catalog",
]

ERROR = "error"
WARNING = "warning"

#: (value, label) of the Mapping Type column
MAPPING_TYPES = (
    ("do_not_map", "Do Not Map"),
    ("direct", "Direct"),
    ("match_codes", "Match Codes"),
    ("transformation", "Transformation"),
)
_TYPE_VALUES = frozenset(t for t, _ in MAPPING_TYPES)
_POLICY_VALUES = frozenset(p for p, _ in UNMATCHED_POLICIES)

#: source keys that are system values, always readable (docs/architecture.md)
SYSTEM_PREFIXES = ("registration.", "school.", "student.")


# ----------------------------------------------------------------------------- results

@dataclass(frozen=True)
class Problem:
    """Something wrong with one field of one record (``field`` is the To Field key).

    ``severity`` "error": the record must not be sent. "warning": sent, but shown.
    """

    field: str | None
    code: str
    message: str
    severity: str = ERROR

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def to_dict(self) -> dict:
        return {"field": self.field, "code": self.code, "message": self.message, "severity": self.severity}


class MappingResult:
    """``payload``: dotted To Field key -> value, blanks left out; ``problems``: per field."""

    __slots__ = ("payload", "problems")

    def __init__(self, payload: dict[str, Any], problems: list[Problem]):
        self.payload = payload
        self.problems = problems

    @property
    def ok(self) -> bool:
        """True when no problem is an error: the record may be sent."""
        for p in self.problems:
            if p.severity == ERROR:
                return False
        return True

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    def problems_for(self, key: str) -> list[Problem]:
        return [p for p in self.problems if p.field == key]

    def __eq__(self, other):
        if not isinstance(other, MappingResult):
            return NotImplemented
        return self.payload == other.payload and self.problems == other.problems

    def __repr__(self):
        return f"MappingResult(payload={self.payload!r}, problems={self.problems!r})"


@dataclass
class RowResult:
    """One row evaluated for one record: what the Mapped Value cell shows."""

    value: Any
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == ERROR for p in self.problems)


class TraceStep(NamedTuple):
    """One line of the live Transformation preview: the value after a step, or its error."""

    label: str
    value: Any
    error: str | None = None


# ----------------------------------------------------------------------------- target checks

def flatten_targets(target_fields: Iterable[FieldSection | TargetField] | None) -> dict[str, TargetField]:
    """key -> TargetField from sections (or bare TargetFields), in order."""
    out: dict[str, TargetField] = {}
    for item in target_fields or ():
        if isinstance(item, TargetField):
            out.setdefault(item.key, item)
        else:
            for f in getattr(item, "fields", ()):
                out.setdefault(f.key, f)
    return out


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_BOOL_TEXT = frozenset({"true", "false", "y", "n", "yes", "no", "1", "0", "t", "f"})


def _shown(value: Any) -> str:
    s = repr(value) if not isinstance(value, str) else "'" + value + "'"
    return s if len(s) <= 60 else s[:57] + "...'"


def _valid_iso_date(s: str) -> bool:
    try:
        date.fromisoformat(s[:10])
    except ValueError:
        return False
    return True


def _type_check(target: TargetField) -> Callable[[Any], str | None] | None:
    """A function value -> message (or None when fine) for the field's type."""
    t = (target.type or "string").lower()
    fmt = (target.format or "").lower()
    label = target.label or target.key
    if t == "date" or fmt == "date":
        def check(v):
            if isinstance(v, date):
                return None
            if v.__class__ is str and _ISO_DATE.match(v) and _valid_iso_date(v):
                return None
            return f"{_shown(v)} is not a date as {label} needs (YYYY-MM-DD); add a Date transformation."
        return check
    if t in ("datetime", "date-time") or fmt == "date-time":
        def check(v):
            if isinstance(v, date):
                return None
            if v.__class__ is str and (_ISO_DATETIME.match(v) or _ISO_DATE.match(v)) and _valid_iso_date(v):
                return None
            return f"{_shown(v)} is not a date and time as {label} needs (YYYY-MM-DDTHH:MM)."
        return check
    if t == "integer":
        def check(v):
            if isinstance(v, bool):
                return f"{_shown(v)} is not a whole number as {label} needs."
            if isinstance(v, int) or (v.__class__ is str and _INTEGER.match(v.strip())):
                return None
            if isinstance(v, float) and v.is_integer():
                return None
            return f"{_shown(v)} is not a whole number as {label} needs."
        return check
    if t == "number":
        def check(v):
            if isinstance(v, bool):
                return f"{_shown(v)} is not a number as {label} needs."
            if isinstance(v, (int, float)):
                return None
            try:
                float(str(v).strip())
            except ValueError:
                return f"{_shown(v)} is not a number as {label} needs."
            return None
        return check
    if t == "boolean":
        def check(v):
            if isinstance(v, bool) or v in (0, 1):
                return None
            if v.__class__ is str and v.strip().lower() in _BOOL_TEXT:
                return None
            return f"{_shown(v)} is not a yes/no value as {label} needs; add a Y/N <-> 1/0 step."
        return check
    return None


def _target_check(target: TargetField | None) -> Callable[[Any], tuple[str, str] | None] | None:
    """One function value -> (code, message) | None combining length, codes and type."""
    if target is None:
        return None
    label = target.label or target.key
    n = target.max_length
    allowed = frozenset(c.value for c in target.codes) if target.codes else None
    shown_codes = ", ".join(c.value for c in target.codes[:10]) + (", ..." if len(target.codes) > 10 else "")
    type_check = _type_check(target)

    if n is not None and allowed is None and type_check is None:
        def only_length(v):  # the common case, kept tight
            if v.__class__ is str:
                if len(v) > n:
                    return "too_long", f"{len(v)} characters; {label} allows at most {n}."
                return None
            if isinstance(v, (list, tuple, dict)):
                return None
            s = str(v)
            if len(s) > n:
                return "too_long", f"{len(s)} characters; {label} allows at most {n}."
            return None
        return only_length
    if n is None and allowed is None and type_check is None:
        return None

    def check(v):
        items = v if isinstance(v, (list, tuple)) else (v,)
        for item in items:
            if allowed is not None:
                if str(item) not in allowed:
                    return "invalid_code", f"{_shown(item)} is not one of the codes for {label} ({shown_codes})."
            elif type_check is not None:
                msg = type_check(item)
                if msg is not None:
                    return "invalid_type", msg
            if n is not None and not isinstance(item, (dict, list)):
                s = item if item.__class__ is str else str(item)
                if len(s) > n:
                    return "too_long", f"{len(s)} characters; {label} allows at most {n}."
        return None

    return check


def _length_only(target: TargetField | None) -> int | None:
    """The max length when it is the target's only rule (the fast path), else None."""
    if target is None or target.max_length is None or target.codes or _type_check(target) is not None:
        return None
    return target.max_length


def make_direct_block(specs: Sequence[tuple]) -> Callable:
    """One function for a run of consecutive Direct rows (one call per record, not per row).

    ``specs``: (key, from, max_length_fast, check) as given by ``CompiledRow.direct_spec``.
    """
    specs = tuple(specs)

    def direct_block(source, sctx, problems, payload):
        get = source.get
        for key, frm, n, check in specs:
            v = get(frm)
            if v is None:
                continue
            if v.__class__ is str:
                if not v or v.isspace():
                    continue
                if n is not None:
                    if len(v) > n:
                        bad = check(v)
                        problems.append(Problem(key, bad[0], bad[1], ERROR))
                elif check is not None:
                    bad = check(v)
                    if bad is not None:
                        problems.append(Problem(key, bad[0], bad[1], ERROR))
            else:
                if (v.__class__ is list or v.__class__ is tuple) and not v:
                    continue
                if check is not None:
                    bad = check(v)
                    if bad is not None:
                        problems.append(Problem(key, bad[0], bad[1], ERROR))
            payload[key] = v
    return direct_block


# ----------------------------------------------------------------------------- rows

def _step_label(index: int, step_cls: Any) -> str:
    label = getattr(step_cls, "label", "") or getattr(step_cls, "kind", "") or "step"
    return f"Step {index} ({label})"


class CompiledRow:
    """One saved row, compiled. ``evaluate`` and ``trace`` serve the editor's preview.

    ``key``: the To Field; ``type``: the Mapping Type; ``source_field``: the From
    Enroll Field; ``target``: the TargetField when known; ``steps``: the built
    Step objects of a Transformation; ``config_problems``: what is wrong with the
    row itself (errors make every record fail; warnings are informational).
    """

    def __init__(self, row: Mapping[str, Any], target: TargetField | None, steps: Mapping[str, type],
                 source_fields: frozenset[str] | None, known_target: bool = True):
        self.row = copy.deepcopy(dict(row))  # later edits of the caller's rows change nothing here
        self.key: str | None = row.get("to") if isinstance(row.get("to"), str) and row.get("to") else None
        self.type: str | None = row.get("type")
        frm = row.get("from")
        self.source_field: str | None = frm if isinstance(frm, str) and frm else None
        self.target = target
        self.steps: tuple[Step, ...] = ()
        self.config_problems: list[Problem] = []
        self._matcher = None
        self._match = None
        self._policy = "fail"
        self._fallback = ""
        self._check = _target_check(target)
        self._fn = None
        self._direct_ok = True
        try:
            self._configure(steps, source_fields, known_target)
        except StepConfigError as e:
            self._config_error(e.message)
        except Exception as e:  # a broken plugin step or a malformed row must not break compile
            self._config_error(f"This row cannot be used: {type(e).__name__}: {e}")
        if self.has_config_error:
            errors = tuple(p for p in self.config_problems if p.severity == ERROR)
            self._fn = self._make_config_error_fn(errors)
        elif self._fn is None:
            self._fn = self._build()

    # -- configuration

    def _config_error(self, message: str) -> None:
        self.config_problems.append(Problem(self.key, "config", message, ERROR))

    def _config_warning(self, message: str) -> None:
        self.config_problems.append(Problem(self.key, "config_warning", message, WARNING))

    @property
    def has_config_error(self) -> bool:
        return any(p.severity == ERROR for p in self.config_problems)

    @property
    def mapped(self) -> bool:
        """True when the row sends something (not Do Not Map)."""
        return self.type in ("direct", "match_codes", "transformation")

    def _check_source(self, key: str, source_fields: frozenset[str] | None, what: str) -> None:
        if source_fields is None or key in source_fields or key.startswith(SYSTEM_PREFIXES):
            return
        self._config_error(f"{what}: unknown Enroll field {key!r}.")

    def _configure(self, steps: Mapping[str, type], source_fields, known_target: bool) -> None:
        row = self.row
        if self.key is None:
            self._config_error("The row has no To Field.")
        elif not known_target:
            self._config_error(f"{self.key!r} is not a field of this SIS (refresh the field list or remove the row).")
        t = self.type
        if t not in _TYPE_VALUES:
            self._config_error("Choose a Mapping Type." if not t else f"Unknown Mapping Type {t!r}.")
            return
        if t == "do_not_map":
            return
        raw_from = row.get("from")
        if raw_from not in (None, "") and self.source_field is None:
            self._config_error("From Enroll Field must be a field key.")
        if t in ("direct", "match_codes") and self.source_field is None:
            self._config_error("Choose a From Enroll Field.")
        if self.source_field:
            self._check_source(self.source_field, source_fields, "From Enroll Field")
        if t == "match_codes":
            self._configure_codes()
        elif t == "transformation":
            self._configure_steps(steps, source_fields)

    def _configure_codes(self) -> None:
        row = self.row
        codes = clean_codes(row.get("codes"), "Codes")
        policy = row.get("unmatched") or "fail"
        if policy not in _POLICY_VALUES:
            self._config_error(f"Unknown choice {policy!r} for answers without a code.")
            return
        fallback = row.get("fallback")
        fallback = "" if fallback is None else str(fallback)
        if policy == "fallback" and not fallback.strip():
            self._config_error("Enter the fallback code for answers without a code.")
            return
        target = self.target
        if target is not None and target.codes:
            allowed = {c.value for c in target.codes}
            for answer, code in codes.items():
                if code != "" and code not in allowed:
                    self._config_warning(f"Code {code!r} (for {answer!r}) is not one of the SIS's codes.")
            if policy == "fallback" and fallback not in allowed:
                self._config_warning(f"The fallback code {fallback!r} is not one of the SIS's codes.")
        self._matcher = CodeMatcher(codes)
        self._policy = policy
        self._fallback = fallback

    def _configure_steps(self, steps: Mapping[str, type], source_fields) -> None:
        specs = self.row.get("steps")
        if specs is None:
            specs = []
        if not isinstance(specs, (list, tuple)):
            self._config_error("Transformation steps must be a list.")
            return
        if not specs and self.source_field is None:
            self._config_error("Add a step or choose a From Enroll Field.")
            return
        built = []
        for i, spec in enumerate(specs, 1):
            if not isinstance(spec, Mapping):
                self._config_error(f"Step {i}: not a step.")
                continue
            kind = spec.get("kind")
            cls = steps.get(kind) if isinstance(kind, str) else None
            if cls is None:
                self._config_error(f"Step {i}: unknown transformation {kind!r} (is its plugin installed?).")
                continue
            settings = {k: v for k, v in spec.items() if k != "kind"}
            try:
                step = cls(**settings)
            except StepConfigError as e:
                self._config_error(f"{_step_label(i, cls)}: {e.message}")
                continue
            except Exception as e:
                self._config_error(f"{_step_label(i, cls)}: cannot be set up ({type(e).__name__}: {e}).")
                continue
            try:
                used = list(step.fields_used())
            except Exception:
                used = []
            for key in used:
                self._check_source(key, source_fields, _step_label(i, cls))
            built.append(step)
        self.steps = tuple(built)

    # -- the per-record functions
    #
    # Each is fn(source, sctx, problems, payload): it writes the row's value into
    # ``payload`` (only when not blank) and appends its problems. Everything a row
    # needs is bound in the closure at compile time.

    @staticmethod
    def _make_config_error_fn(errors: tuple[Problem, ...]):
        def config_error(source, sctx, problems, payload):
            problems.extend(errors)
        return config_error

    def _build(self):
        t = self.type
        if t == "direct":
            return make_direct_block((self.direct_spec(),))
        if t == "match_codes":
            return self._build_codes()
        if t == "transformation":
            return self._build_transformation()
        return None  # do_not_map

    def direct_spec(self) -> tuple:
        """(key, from, fast max length or None, check or None) for ``make_direct_block``."""
        return (self.key, self.source_field, _length_only(self.target), self._check)

    def _unmatched_problem(self, answer: Any, outcome: str) -> Problem:
        if is_blank(answer):
            if outcome == "fallback":
                return Problem(self.key, "unmatched_code",
                               f"No answer; sent the fallback {_shown(self._fallback)}.", WARNING)
            return Problem(self.key, "unmatched_code", "No answer, and this row fails the record when an answer "
                           "has no code (choose “Leave blank” or a fallback if a blank answer is fine).", ERROR)
        if outcome == "fallback":
            return Problem(self.key, "unmatched_code",
                           f"{_shown(answer)} has no code; sent the fallback {_shown(self._fallback)}.", WARNING)
        if outcome == "blank":
            return Problem(self.key, "unmatched_code", f"{_shown(answer)} has no code; left blank.", WARNING)
        return Problem(self.key, "unmatched_code", f"{_shown(answer)} has no code.", ERROR)

    def _build_codes(self):
        frm, check, key = self.source_field, self._check, self.key
        match = self._match = self._matcher.compile(self._policy, self._fallback)
        unmatched = self._unmatched_problem
        exact_get, loose_get = self._matcher._exact.get, self._matcher._loose.get
        missing = CodeMatcher.MISSING
        # Codes come from the table, so check each once now instead of per record.
        bad_codes = {}
        if check is not None:
            for code in set(self._matcher.codes.values()):
                if code != "":
                    bad = check(code)
                    if bad is not None:
                        bad_codes[code] = Problem(key, bad[0], bad[1], ERROR)
        bad_get = bad_codes.get if bad_codes else None

        def match_codes(source, sctx, problems, payload):
            answer = source.get(frm)
            if answer.__class__ is str and answer and not answer.isspace():  # the usual case, inlined
                code = exact_get(answer, missing)
                if code is missing:
                    code = loose_get(answer.strip().casefold(), missing)
                if code is not missing:
                    if code == "":
                        return
                    if bad_get is not None:
                        bad = bad_get(code)
                        if bad is not None:
                            problems.append(bad)
                    payload[key] = code
                    return
            v, outcome = match(answer)
            if outcome is not None:
                problems.append(unmatched(answer, outcome))
            if v is None:
                return
            if check is not None:
                bad = check(v)
                if bad is not None:
                    problems.append(Problem(key, bad[0], bad[1], ERROR))
            payload[key] = v
        return match_codes

    def _build_transformation(self):
        key, frm, check = self.key, self.source_field, self._check
        applies = tuple(s.apply for s in self.steps)
        labels = tuple(_step_label(i, type(s)) for i, s in enumerate(self.steps, 1))

        def failed(apply, exc, problems):
            label = labels[applies.index(apply)]
            if isinstance(exc, StepError):
                problems.append(Problem(key, "step_error", f"{label}: {exc.message}", ERROR))
            else:
                problems.append(Problem(key, "step_bug",
                                        f"{label} failed unexpectedly ({type(exc).__name__}: {exc}).", ERROR))

        def drain(sctx, problems):
            for code, message in sctx.warnings:
                problems.append(Problem(key, code, message, WARNING))
            sctx.warnings = None

        def transformation(source, sctx, problems, payload):
            v = source.get(frm) if frm is not None else None
            apply = None
            try:
                for apply in applies:
                    v = apply(v, sctx)
            except Exception as exc:  # StepError, or a bug in a plugin step
                if sctx.warnings:
                    drain(sctx, problems)
                failed(apply, exc, problems)
                return
            if sctx.warnings:
                drain(sctx, problems)
            if v is None:
                return
            c = v.__class__
            if c is str:
                if not v or v.isspace():
                    return
            elif (c is list or c is tuple) and not v:
                return
            if check is not None:
                bad = check(v)
                if bad is not None:
                    problems.append(Problem(key, bad[0], bad[1], ERROR))
            payload[key] = v
        return transformation

    # -- the editor's API

    def _required_problem(self, insert: bool | None) -> Problem | None:
        target = self.target
        if target is None or not target.required or insert is False:
            return None
        return _required_problem(target, self.mapped and not self.has_config_error, insert)

    def evaluate(self, source: Mapping[str, Any], ctx: MappingContext | None = None) -> RowResult:
        """The value this row sends for ``source`` and its problems (the Mapped Value cell)."""
        ctx = ctx if ctx is not None else MappingContext()
        problems: list[Problem] = []
        value = None
        if self._fn is not None:
            out: dict[str, Any] = {}
            self._fn(source, StepContext(source, ctx), problems, out)
            value = out.get(self.key)
        if value is None and not any(p.severity == ERROR for p in problems):
            req = self._required_problem(ctx.insert)
            if req is not None:
                problems.append(req)
        if value is not None and ctx.insert is False and self.target is not None and self.target.insert_only:
            value = None
        return RowResult(value, problems)

    def trace(self, source: Mapping[str, Any], ctx: MappingContext | None = None) -> list[TraceStep]:
        """The value after each step, for the live Transformation preview.

        The first line is the From Enroll Field's value; a step that fails shows its
        message and ends the trace. Works for every Mapping Type (Direct and Match
        Codes give one or two lines).
        """
        ctx = ctx if ctx is not None else MappingContext()
        errors = [p for p in self.config_problems if p.severity == ERROR]
        if errors:
            return [TraceStep("Configuration", None, p.message) for p in errors]
        if self.type == "do_not_map":
            return [TraceStep("Do Not Map", None, None)]
        out: list[TraceStep] = []
        value = source.get(self.source_field) if self.source_field else None
        if self.source_field:
            out.append(TraceStep(f"From {self.source_field}", value, None))
        if self.type == "direct":
            return out
        if self.type == "match_codes":
            code, outcome = self._match(value)
            err = self._unmatched_problem(value, outcome).message if outcome == "fail" else None
            out.append(TraceStep("Match Codes", code, err))
            return out
        sctx = StepContext(source, ctx)
        for i, step in enumerate(self.steps, 1):
            label = f"{i}. {step.label or step.kind}"
            try:
                value = step.apply(value, sctx)
            except StepError as e:
                out.append(TraceStep(label, None, e.message))
                break
            except Exception as e:
                out.append(TraceStep(label, None, f"failed unexpectedly ({type(e).__name__}: {e})"))
                break
            out.append(TraceStep(label, value, None))
        return out

    def __repr__(self):
        return f"<CompiledRow {self.key!r} {self.type}>"


def _required_problem(target: TargetField, mapped: bool, insert: bool | None) -> Problem:
    label = target.label or target.key
    why = "is blank" if mapped else "is not mapped"
    if insert:
        return Problem(target.key, "required", f"{label} is required for a new student and {why}.", ERROR)
    return Problem(target.key, "required", f"{label} is required for a new student and {why}.", WARNING)


# ----------------------------------------------------------------------------- the mapping

class CompiledMapping:
    """A saved mapping compiled once; call it per record.

    ``mapping(source, ctx) -> MappingResult``. Also: ``evaluate_row``/``trace_row``
    for the editor, ``config_problems`` and ``unmapped_required`` for the Save
    summary, ``fields_used`` for loading only what is needed. Immutable and safe to
    share between threads.
    """

    def __init__(self, rows: tuple[CompiledRow, ...], targets: dict[str, TargetField],
                 extra_problems: Sequence[Problem] = ()):
        self.rows = rows
        self.targets = targets
        by_key: dict[str, CompiledRow] = {}
        for r in rows:  # the first row that maps the key; else the first row naming it
            if r.key is not None and (r.key not in by_key or (r.mapped and not by_key[r.key].mapped)):
                by_key[r.key] = r
        self._by_key = by_key
        self.config_problems: list[Problem] = [p for r in rows for p in r.config_problems] + list(extra_problems)
        mapped = {r.key for r in rows if r.mapped and r.key is not None}
        #: required To Fields without a Direct / Match Codes / Transformation row
        self.unmapped_required: list[TargetField] = [
            t for t in targets.values() if t.required and t.key not in mapped]
        self._fns = _group_functions(rows)
        self._required = tuple((t, t.key in mapped and not by_key[t.key].has_config_error)
                               for t in targets.values() if t.required)
        self._insert_only = tuple(t.key for t in targets.values() if t.insert_only)

    def __call__(self, source: Mapping[str, Any], ctx: MappingContext | None = None) -> MappingResult:
        if ctx is None:
            ctx = MappingContext()
        sctx = StepContext(source, ctx)
        payload: dict[str, Any] = {}
        problems: list[Problem] = []
        for fn in self._fns:
            fn(source, sctx, problems, payload)
        insert = ctx.insert
        if insert is False:
            for key in self._insert_only:
                payload.pop(key, None)
        elif self._required:
            for target, mapped in self._required:
                if target.key not in payload:
                    tk = target.key
                    if not any(p.field == tk and p.severity == ERROR for p in problems):
                        problems.append(_required_problem(target, mapped, insert))
        return MappingResult(payload, problems)

    def map(self, source: Mapping[str, Any], ctx: MappingContext | None = None) -> MappingResult:
        """Same as calling the mapping."""
        return self(source, ctx)

    def row(self, key: str) -> CompiledRow:
        """The row writing ``key`` (the first one if several do). KeyError if none."""
        return self._by_key[key]

    def evaluate_row(self, key: str, source: Mapping[str, Any], ctx: MappingContext | None = None) -> RowResult:
        """The Mapped Value cell of To Field ``key``: its value and problems for ``source``.

        A To Field without a row gives a blank value (and a required problem when
        the field is required). KeyError for a key that is neither mapped nor a target.
        """
        r = self._by_key.get(key)
        if r is not None:
            return r.evaluate(source, ctx)
        target = self.targets[key]
        ctx = ctx if ctx is not None else MappingContext()
        problems = []
        if target.required and ctx.insert is not False:
            problems.append(_required_problem(target, False, ctx.insert))
        return RowResult(None, problems)

    def trace_row(self, key: str, source: Mapping[str, Any], ctx: MappingContext | None = None) -> list[TraceStep]:
        """(label, value, error) after each step of the row writing ``key``."""
        return self._by_key[key].trace(source, ctx)

    def fields_used(self) -> list[str]:
        """Every source key the mapping reads, sorted."""
        keys = set()
        for r in self.rows:
            if r.has_config_error or not r.mapped:
                continue
            if r.source_field:
                keys.add(r.source_field)
            for s in r.steps:
                keys.update(s.fields_used())
        return sorted(keys)

    def to_rows(self) -> list[dict]:
        """The saved rows this mapping was compiled from (copies)."""
        return [copy.deepcopy(r.row) for r in self.rows]

    def __len__(self):
        return len(self.rows)

    def __repr__(self):
        return f"<CompiledMapping {len(self.rows)} rows, {len(self.config_problems)} config problems>"


def _group_functions(rows: Sequence[CompiledRow]) -> tuple[Callable, ...]:
    """The per-record functions in row order, runs of plain Direct rows merged into one."""
    fns: list[Callable] = []
    run: list[tuple] = []
    for r in rows:
        if r._fn is None:
            continue
        if r.type == "direct" and not r.has_config_error and r._direct_ok:
            run.append(r.direct_spec())
            continue
        if run:
            fns.append(make_direct_block(run))
            run = []
        fns.append(r._fn)
    if run:
        fns.append(make_direct_block(run))
    return tuple(fns)


def _default_steps() -> dict[str, type]:
    from .builtin_steps import builtin_step_classes
    return builtin_step_classes()


def compile_row(row: Mapping[str, Any], target_fields: Iterable[FieldSection | TargetField] = (),
                steps: Mapping[str, type] | None = None, *,
                source_fields: Iterable[str] | None = None) -> CompiledRow:
    """Compile one row alone, e.g. the row being edited, for its preview and trace.

    Same checks as ``compile_mapping`` (the target is looked up in ``target_fields``).
    """
    targets = flatten_targets(target_fields)
    key = row.get("to") if isinstance(row, Mapping) else None
    if not isinstance(row, Mapping):
        row = {}
    target = targets.get(key) if isinstance(key, str) else None
    known = not targets or target is not None
    return CompiledRow(row, target, steps if steps is not None else _default_steps(),
                       frozenset(source_fields) if source_fields is not None else None, known)


def compile_mapping(rows: Iterable[Mapping[str, Any]], target_fields: Iterable[FieldSection | TargetField] = (),
                    steps: Mapping[str, type] | None = None, *,
                    source_fields: Iterable[str] | None = None) -> CompiledMapping:
    """Compile saved rows into a CompiledMapping. Never raises for a bad row.

    ``target_fields``: the adapter's FieldSections (or TargetFields); when given,
    rows are checked against them (unknown To Field, required, max_length, codes,
    type). ``steps``: kind -> Step class, e.g. ``plugins.step_classes(pm)``;
    default the built-ins. ``source_fields``: the catalog keys a row may read;
    when given, unknown From fields are row errors (``registration.*``,
    ``school.*`` and ``student.*`` are always allowed).
    """
    targets = flatten_targets(target_fields)
    step_map = steps if steps is not None else _default_steps()
    known_sources = frozenset(source_fields) if source_fields is not None else None
    compiled = []
    seen: set[str] = set()
    extra: list[Problem] = []
    for i, row in enumerate(rows or ()):
        if not isinstance(row, Mapping):
            extra.append(Problem(None, "config", f"Row {i + 1} is not a mapping row.", ERROR))
            continue
        key = row.get("to")
        target = targets.get(key) if isinstance(key, str) else None
        known = not targets or target is not None
        r = CompiledRow(row, target, step_map, known_sources, known)
        if r.key is not None and r.key in seen and r.type != "do_not_map":
            r.config_problems.append(Problem(r.key, "config", f"{r.key!r} is mapped by more than one row.", ERROR))
            r._fn = CompiledRow._make_config_error_fn(
                tuple(p for p in r.config_problems if p.severity == ERROR))
            r._direct_ok = False
        if r.key is not None and r.type != "do_not_map":
            seen.add(r.key)
        compiled.append(r)
    mapping = CompiledMapping(tuple(compiled), targets, extra)
    if extra:
        errors = tuple(extra)

        def report(source, sctx, problems, payload):
            problems.extend(errors)
        mapping._fns = mapping._fns + (report,)
    return mapping


def step_catalog(steps: Mapping[str, type] | None = None) -> list[dict]:
    """What the step picker offers: [{kind, label, help, params}], in registration order."""
    step_map = steps if steps is not None else _default_steps()
    return [cls.describe() for cls in step_map.values()]
