"""Match Codes: answer -> SIS code tables, the unmatched policy, and the editor's answer list.

An answer matches a code when it is equal to the table's answer, or equal after
trimming spaces and ignoring case ("female " matches "Female"). The same rule is
used by the engine, the Match Codes step and ``match_code_answers``, so the
editor's "no code" warnings are exactly the answers the engine treats as unmatched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from .context import is_blank

__all__ = ["UNMATCHED_POLICIES", "CodeAnswer", "CodeMatcher", "match_code_answers", "normalise_answer"]

#: what happens to an answer without a code
UNMATCHED_POLICIES = (
    ("fail", "Fail the record"),
    ("fallback", "Use a fallback code"),
    ("blank", "Leave blank"),
)

_MISSING = object()


def normalise_answer(value: Any) -> str:
    return str(value).strip().casefold()


class CodeMatcher:
    """A compiled code table. ``lookup(answer)`` -> code, or ``CodeMatcher.MISSING``."""

    MISSING = _MISSING

    def __init__(self, codes: Mapping[str, str]):
        self.codes = dict(codes)
        self._exact = dict(self.codes)
        loose: dict[str, str] = {}
        for answer, code in self.codes.items():
            loose.setdefault(normalise_answer(answer), code)
        self._loose = loose

    def lookup(self, answer: Any) -> Any:
        if answer.__class__ is str:
            code = self._exact.get(answer, _MISSING)
            if code is _MISSING:
                code = self._loose.get(answer.strip().casefold(), _MISSING)
            return code
        return self.lookup(str(answer))  # numbers and booleans match by their text

    def compile(self, policy: str, fallback: str) -> Callable[[Any], tuple[Any, str | None]]:
        """A function answer -> (value, problem) where problem is None, "fallback", "blank" or "fail".

        A blank answer follows the policy too (a fallback is sent, "blank" sends nothing
        and reports nothing, "fail" fails the record). A list
        (a multi-select answer) is mapped item by item; unmatched items follow the
        policy (a fallback replaces the item, blank drops it, fail fails the list).
        """
        exact_get = self._exact.get
        loose_get = self._loose.get
        missing = _MISSING
        fallback_value = fallback if fallback != "" else None

        def one(answer: Any) -> tuple[Any, str | None]:
            if answer.__class__ is str:
                code = exact_get(answer, missing)
                if code is missing:
                    code = loose_get(answer.strip().casefold(), missing)
            else:
                code = self.lookup(answer)
            if code is not missing:
                return (code if code != "" else None), None
            if policy == "fallback":
                return fallback_value, "fallback"
            if policy == "blank":
                return None, "blank"
            return None, "fail"

        def none_given() -> tuple[Any, str | None]:
            # a blank answer has no code either: the row's policy decides (a fallback is
            # sent; "blank" sends nothing and is no news; "fail" fails the record)
            if policy == "fallback":
                return fallback_value, "fallback"
            if policy == "blank":
                return None, None
            return None, "fail"

        def match(answer: Any) -> tuple[Any, str | None]:
            if answer is None:
                return none_given()
            if answer.__class__ is str:
                if not answer or answer.isspace():
                    return none_given()
                return one(answer)
            if isinstance(answer, (list, tuple)):
                if all(is_blank(item) for item in answer):
                    return none_given()
                out, worst = [], None
                for item in answer:
                    if is_blank(item):
                        continue
                    code, problem = one(item)
                    if problem == "fail":
                        return None, "fail"
                    if problem is not None:
                        worst = problem
                    if code is not None and code not in out:
                        out.append(code)
                return (out or None), worst
            return one(answer)

        return match


@dataclass(frozen=True)
class CodeAnswer:
    """One line of the Match Codes editor.

    ``answer``: the answer as stored; ``label``: how the form shows it; ``code``:
    the code it becomes (None when unmatched); ``unmatched``: no code — the row's
    policy applies and the editor shows a warning; ``from_options`` / ``seen``:
    whether it is one of the field's choices and/or was seen in registrations
    (``count`` times when counts were given); ``allowed``: False when the SIS
    lists its codes and this code is not among them.
    """

    answer: str
    label: str
    code: str | None
    unmatched: bool
    from_options: bool
    seen: bool
    count: int | None = None
    allowed: bool = True


def _option_pairs(options: Iterable[Any]) -> list[tuple[str, str]]:
    out = []
    for opt in options or ():
        if isinstance(opt, Mapping):
            value = opt.get("value", opt.get("answer"))
            label = opt.get("label", value)
        elif isinstance(opt, (list, tuple)) and len(opt) == 2:
            value, label = opt
        else:
            value = label = opt
        if value is None:
            continue
        out.append((str(value), str(label if label is not None else value)))
    return out


def match_code_answers(field_options: Iterable[Any], seen_values: Iterable[Any] | Mapping[Any, int],
                       codes: Mapping[str, str], allowed_codes: Iterable[Any] | None = None) -> list[CodeAnswer]:
    """Every answer a field can have, with the code it becomes and whether it is unmatched.

    ``field_options``: the field's choices (strings, (value, label) pairs or
    {value, label} dicts), listed first in their order. ``seen_values``: answers
    found in registrations, as an iterable or a {answer: count} mapping; those not
    among the options follow, sorted case-insensitively. Blank answers are left out
    (they send nothing). ``allowed_codes``: the SIS's codes (strings or ``Code``)
    to flag codes it would refuse. Deterministic for the same inputs.
    """
    matcher = CodeMatcher(codes)
    counts: dict[str, int] | None = None
    seen_list: list[str] = []
    if isinstance(seen_values, Mapping):
        counts = {}
        for value, n in seen_values.items():
            if is_blank(value):
                continue
            key = str(value)
            counts[key] = counts.get(key, 0) + int(n or 0)
        seen_list = list(counts)
    else:
        for value in seen_values or ():
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if not is_blank(item):
                    seen_list.append(str(item))
    seen_set = set(seen_list)
    allowed = None
    if allowed_codes is not None:
        allowed = {str(getattr(c, "value", c)) for c in allowed_codes}

    def line(answer: str, label: str, from_options: bool) -> CodeAnswer:
        code = matcher.lookup(answer)
        unmatched = code is _MISSING
        code_value = None if unmatched else code
        ok = True
        if allowed is not None and code_value not in (None, ""):
            ok = code_value in allowed
        return CodeAnswer(answer=answer, label=label, code=code_value, unmatched=unmatched,
                          from_options=from_options, seen=answer in seen_set,
                          count=(counts.get(answer, 0) if counts is not None else None), allowed=ok)

    out: list[CodeAnswer] = []
    done: set[str] = set()
    for value, label in _option_pairs(field_options):
        if is_blank(value) or value in done:
            continue
        done.add(value)
        out.append(line(value, label, True))
    for value in sorted(set(seen_list) - done, key=lambda s: (s.casefold(), s)):
        out.append(line(value, value, False))
    return out
