"""The built-in transformation steps, registered like any plugin's.

This module is a default plugin (see ``enroll_sync.plugins.DEFAULT_PLUGINS``): its
``register_transformations`` hook returns the step classes below. Blank input
passes through as None unless a step's help says otherwise.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

import regex

from enroll_sync.hookspecs import hookimpl

from .codes import UNMATCHED_POLICIES, CodeMatcher
from .context import is_blank, parse_school_year
from .dates import AUTO, DATE_FORMATS, as_date, compile_formatter, compile_parser, parse_auto
from .steps import Param, Step, StepConfigError, StepContext, StepError

__all__ = [
    "DateStep", "TodayStep", "LowerStep", "UpperStep", "ProperCaseStep", "TrimStep", "SquishStep",
    "FieldValueStep", "ValueInputStep", "JoinStep", "PickStep", "SplitStep", "SubstituteStep",
    "IfThenElseStep", "PhoneNumberStep", "SchoolYearStep", "MatchCodesStep", "TransliterateStep",
    "MaxLengthStep", "DefaultIfBlankStep", "BooleanFormatStep", "ExpressionStep", "BUILTIN_STEPS",
    "builtin_step_classes",
]


def _text(value: Any) -> str:
    """Text of a value; a multi-select answer (a list) reads as "A, B"."""
    if value.__class__ is str:
        return value
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value if not is_blank(v))
    return str(value)


def _show(value: Any) -> str:
    """A value quoted for an error message, cut short."""
    s = repr(value) if not isinstance(value, str) else "'" + value + "'"
    return s if len(s) <= 60 else s[:57] + "...'"


# ----------------------------------------------------------------------------- dates

_SOURCE_DATE_CHOICES = ((AUTO, "Auto-detect"),) + DATE_FORMATS


class DateStep(Step):
    kind = "date"
    label = "Date"
    help = "Rewrite a date in another format (09/01/2007 -> 2007-09-01)."
    params = (
        Param("from_format", "Stored as", "select", _SOURCE_DATE_CHOICES, default=AUTO,
              help="How the date is written in Enroll. Auto-detect reads 09/01/2007 as "
                   "September 1 (month first) unless the first number is over 12."),
        Param("to_format", "Send as", "select", DATE_FORMATS, default="YYYY-MM-DD",
              help="The format the SIS expects."),
    )

    def setup(self) -> None:
        src = self.options["from_format"]
        if src == AUTO:
            self._parse = parse_auto
        else:
            self._parse = compile_parser(src)
        self._format = compile_formatter(self.options["to_format"])
        self._src_label = "a recognisable date" if src == AUTO else src

    def apply(self, value: Any, ctx: StepContext) -> Any:
        if value is None:
            return None
        if value.__class__ is not str:
            d = as_date(value)
            if d is None:
                value = str(value)
            else:
                return self._format(d)
        if not value or value.isspace():
            return None
        try:
            d = self._parse(value, ctx.today)
        except ValueError:
            raise StepError(f"{_show(value)} is not {self._src_label}.") from None
        return self._format(d)


class TodayStep(Step):
    kind = "today"
    label = "Today"
    help = "The date of the sync (ignores the current value)."
    params = (Param("to_format", "Send as", "select", DATE_FORMATS, default="YYYY-MM-DD"),)

    def setup(self) -> None:
        self._format = compile_formatter(self.options["to_format"])

    def apply(self, value: Any, ctx: StepContext) -> Any:
        return self._format(ctx.today)


# ----------------------------------------------------------------------------- case and spaces

class LowerStep(Step):
    kind = "lower"
    label = "Lower"
    help = "lower case."

    def apply(self, value, ctx):
        return None if value is None else _text(value).lower()


class UpperStep(Step):
    kind = "upper"
    label = "Upper"
    help = "UPPER CASE."

    def apply(self, value, ctx):
        return None if value is None else _text(value).upper()


_APOSTROPHE_AFTER_WORD = re.compile(r"(?<=[^\W\d_]{2})(['\u2019])([^\W\d_])")
_MC = re.compile(r"\bMc([a-z])")
_AFTER_DIGIT = re.compile(r"(?<=\d)([^\W\d_]+)")
_ROMAN = re.compile(r"\b(Ii|Iii|Iv)\b")


class ProperCaseStep(Step):
    kind = "proper_case"
    label = "Proper Case"
    help = "Capitalise each word: ANA MARIA O'BRIEN-MCDONALD -> Ana Maria O'Brien-McDonald."
    params = (
        Param("keep_mixed", "Keep names already in mixed case", "bool", default=True,
              help="Leave DeShawn or LaToya as typed; only ALL CAPS or all lower case is changed."),
    )

    def setup(self) -> None:
        self._keep_mixed = self.options["keep_mixed"]

    def apply(self, value, ctx):
        if value is None:
            return None
        s = _text(value)
        if self._keep_mixed and not (s.islower() or s.isupper()):
            return s
        t = s.title()  # capitalises after spaces, hyphens and apostrophes: O'Brien, Ana-Maria
        if "'" in t or "\u2019" in t:
            t = _APOSTROPHE_AFTER_WORD.sub(lambda m: m.group(1) + m.group(2).lower(), t)  # Ana's
        if "Mc" in t:
            t = _MC.sub(lambda m: "Mc" + m.group(1).upper(), t)
        if "I" in t:
            t = _ROMAN.sub(lambda m: m.group(1).upper(), t)
        if any(c.isdigit() for c in t):
            t = _AFTER_DIGIT.sub(lambda m: m.group(1).lower(), t)  # 3rd, not 3Rd
        return t


class TrimStep(Step):
    kind = "trim"
    label = "Trim"
    help = "Remove spaces at the start and end."

    def apply(self, value, ctx):
        return None if value is None else _text(value).strip()


class SquishStep(Step):
    kind = "squish"
    label = "Squish"
    help = "Trim, and collapse runs of spaces, tabs and line breaks inside into one space."

    def apply(self, value, ctx):
        return None if value is None else " ".join(_text(value).split())


# ----------------------------------------------------------------------------- values and fields

class FieldValueStep(Step):
    kind = "field"
    label = "Direct"
    help = "Replace the current value with another Enroll field's value, as it is."
    params = (Param("field", "Field", "field", required=True),)

    def setup(self):
        self._field = self.options["field"]

    def apply(self, value, ctx):
        return ctx.source.get(self._field)


class ValueInputStep(Step):
    kind = "value"
    label = "Value Input"
    help = "A fixed value (ignores the current value)."
    params = (Param("value", "Value", "text", help="Sent for every student; leave empty to send nothing."),)

    def setup(self):
        v = self.options["value"]
        self._value = v if v != "" else None

    def apply(self, value, ctx):
        return self._value


class JoinStep(Step):
    kind = "join"
    label = "Join"
    help = "Join several fields with a delimiter, skipping blanks (trimmed)."
    params = (
        Param("fields", "Fields", "fields", required=True),
        Param("delimiter", "Delimiter", "text", default=" ", help="Put between the values (a space by default)."),
        Param("include_value", "Start with the current value", "bool", default=False),
    )

    def setup(self):
        self._fields = tuple(self.options["fields"])
        self._delimiter = self.options["delimiter"]
        self._include = self.options["include_value"]

    def apply(self, value, ctx):
        get = ctx.source.get
        parts = []
        if self._include and value is not None:
            s = _text(value).strip()
            if s:
                parts.append(s)
        for key in self._fields:
            v = get(key)
            if v is None:
                continue
            s = _text(v).strip()
            if s:
                parts.append(s)
        return self._delimiter.join(parts) if parts else None


class PickStep(Step):
    kind = "pick"
    label = "Pick"
    help = "The first of several fields that is not blank (e.g. preferred name, else legal name)."
    params = (
        Param("fields", "Fields, in order", "fields", required=True),
        Param("include_value", "Try the current value first", "bool", default=False),
    )

    def setup(self):
        self._fields = tuple(self.options["fields"])
        self._include = self.options["include_value"]

    def apply(self, value, ctx):
        if self._include and not is_blank(value):
            return value
        get = ctx.source.get
        for key in self._fields:
            v = get(key)
            if not is_blank(v):
                return v
        return None


class SplitStep(Step):
    kind = "split"
    label = "Split"
    help = ("One part of a text split by a delimiter: part 1 is the first, -1 the last. "
            "Parts are trimmed.")
    params = (
        Param("delimiter", "Delimiter", "text", default="",
              help="Leave empty to split on spaces."),
        Param("part", "Part", "int", default=1, required=True,
              help="1 = first, 2 = second, -1 = last, -2 = second to last."),
        Param("rest", "Include everything after this part", "bool", default=False,
              help="E.g. part 2 with this on turns 'Ana Maria Lopez' into 'Maria Lopez'."),
        Param("missing", "When the part does not exist", "select",
              (("blank", "Leave blank"), ("error", "Fail the record")), default="blank"),
    )

    def setup(self):
        part = self.options["part"]
        if part == 0:
            raise StepConfigError("Part: 0 is not a part; use 1 for the first or -1 for the last.")
        self._index = part - 1 if part > 0 else part
        self._delimiter = self.options["delimiter"] or None
        self._joiner = self.options["delimiter"] or " "
        self._rest = self.options["rest"]
        self._fail = self.options["missing"] == "error"
        self._part = part

    def apply(self, value, ctx):
        if value is None:
            return None
        s = _text(value)
        if not s or s.isspace():
            return None
        parts = s.split(self._delimiter)
        n, i = len(parts), self._index
        if i >= n or i < -n:
            if self._fail:
                raise StepError(f"{_show(s)} has {n} part(s); there is no part {self._part}.")
            return None
        if self._rest:
            out = self._joiner.join(parts[i:]).strip()
        else:
            out = parts[i].strip()
        return out or None


def _compile_replacement(pattern: re.Pattern, repl: str) -> Any:
    """Validate a regex replacement template now, and return what ``pattern.sub`` runs fastest.

    Python 3.11 re-parses a template containing groups on every call (through a
    cache lookup and a Python-level expander); a closure built once here is about
    three times faster. From 3.12 the C engine keeps a compiled template itself.
    """
    try:
        if hasattr(re, "_compile_repl"):  # Python 3.11
            groups, literals = re._compile_repl(repl, pattern)  # type: ignore[attr-defined]
        else:  # Python 3.12+: validate; the string itself is the fast path
            re._compile_template(pattern, repl)  # type: ignore[attr-defined]
            return repl
    except (re.error, IndexError) as e:
        raise StepConfigError(f"Replace with: {e}.") from None
    except AttributeError:  # pragma: no cover - a future Python without either helper
        return repl
    if not groups:
        literal = "".join(x for x in literals if x)
        return lambda m: literal
    if len(groups) == 1 and all(x is None or x == "" for x in literals):
        g = groups[0][1]
        return lambda m: m.group(g) or ""
    template = list(literals)
    slots = tuple(groups)

    def expand(m):
        parts = template[:]
        group = m.group
        for index, g in slots:
            parts[index] = group(g) or ""
        return "".join(parts)
    return expand


#: how long a Substitute regular expression may run on one answer
SUBSTITUTE_TIMEOUT_S = 0.25


class SubstituteStep(Step):
    kind = "substitute"
    label = "Substitute"
    help = "Find and replace text, plainly or with a regular expression."
    params = (
        Param("mode", "Find", "select", (("plain", "Plain text"), ("regex", "Regular expression")),
              default="plain"),
        Param("find", "Find", "text", required=True),
        Param("replace", "Replace with", "text", default="",
              help=r"With a regular expression, \1 or \g<name> inserts a group."),
        Param("ignore_case", "Ignore case", "bool", default=False),
        Param("whole_value", "Only when it is the whole value", "bool", default=False,
              help="Replace 'N/A' only when the answer is exactly 'N/A'."),
    )

    def setup(self):
        o = self.options
        find, repl = o["find"], o["replace"]
        flags = re.IGNORECASE if o["ignore_case"] else 0
        if o["mode"] == "regex":
            source = find
        else:
            source = re.escape(find)
            literal = repl
            repl = lambda m: literal  # noqa: E731 - plain text: no group references
        if o["whole_value"]:
            source = r"\A(?:" + source + r")\Z"
        try:
            self._pattern = re.compile(source, flags)
        except re.error as e:
            raise StepConfigError(f"Find: {find!r} is not a valid regular expression ({e}).") from None
        self._sub = self._pattern.sub
        if o["mode"] == "regex":
            repl = _compile_replacement(self._pattern, repl)
            # an admin's pattern can backtrack for ever on one answer ("(a|aa)+$"): the
            # regex engine runs it with a time limit, so a preview or a job never hangs
            try:
                guarded = regex.compile(source, regex.IGNORECASE if flags else 0)
            except regex.error as e:
                raise StepConfigError(f"Find: {find!r} is not a valid regular expression ({e}).") from None
            self._sub = functools.partial(guarded.sub, timeout=SUBSTITUTE_TIMEOUT_S)
            if _linear(source):
                # no repeat at all: it cannot backtrack for ever, and the standard engine
                # without a time limit is several times faster
                try:
                    self._sub = re.compile(source, flags).sub
                except re.error:
                    pass
        self._repl = repl
        # plain, case-sensitive, anywhere: str.replace is the fastest correct choice
        self._plain = o["find"] if (o["mode"] == "plain" and not flags and not o["whole_value"]) else None
        self._plain_repl = o["replace"]

    def apply(self, value, ctx):
        if value is None:
            return None
        s = _text(value)
        if self._plain is not None:
            return s.replace(self._plain, self._plain_repl)
        try:
            return self._sub(self._repl, s)
        except TimeoutError:
            raise StepError(f"Find: the regular expression took longer than {SUBSTITUTE_TIMEOUT_S:g} s on "
                            f"this answer; make it simpler (nested repeats such as (a+)+ are the usual "
                            f"cause).") from None
        except (re.error, regex.error, IndexError) as e:  # pragma: no cover - validated in setup
            raise StepError(str(e)) from None


_CLASS_OR_ESCAPE = re.compile(r"\\.|\[(?:\\.|[^\]\\])*\]")


def _linear(pattern: str) -> bool:
    """True when ``pattern`` repeats nothing (no ``* + ? {``, no back-reference outside a
    character class): its matching time is bounded by the pattern's length at each position."""
    rest = _CLASS_OR_ESCAPE.sub(lambda m: "" if m.group(0).startswith("[") or not m.group(0)[1:].isdigit()
                                else "\\1", pattern)
    return not any(c in rest for c in "*+?{\\")


_OPERATORS = (
    ("equals", "equals"),
    ("not_equals", "does not equal"),
    ("is_blank", "is blank"),
    ("is_not_blank", "is not blank"),
    ("contains", "contains"),
    ("one_of", "is one of (comma-separated)"),
)
_OUTCOMES = (("value", "Use this value"), ("keep", "Keep the current value"))


class IfThenElseStep(Step):
    kind = "if_then_else"
    label = "If Then Else"
    help = "Choose the value by a condition on a field (comparisons trim spaces)."
    params = (
        Param("field", "If field", "field", help="Leave empty to test the current value."),
        Param("operator", "Condition", "select", _OPERATORS, default="equals"),
        Param("compare", "Value", "text",
              show_if=("operator", ("equals", "not_equals", "contains", "one_of"))),
        Param("ignore_case", "Ignore case", "bool", default=True),
        Param("then_mode", "Then", "select", _OUTCOMES, default="value"),
        Param("then_value", "Then value", "text", show_if=("then_mode", ("value",)),
              help="Leave empty to send nothing."),
        Param("else_mode", "Else", "select", _OUTCOMES, default="keep"),
        Param("else_value", "Else value", "text", show_if=("else_mode", ("value",)),
              help="Leave empty to send nothing."),
    )

    def setup(self):
        o = self.options
        fold = (lambda s: s.casefold()) if o["ignore_case"] else (lambda s: s)
        op = o["operator"]
        compare = fold(o["compare"].strip())
        if op == "one_of":
            options = frozenset(fold(p.strip()) for p in o["compare"].split(","))
        field = o["field"] or None

        def norm(v):
            if v is None:
                return ""
            if isinstance(v, (list, tuple)):
                return fold(", ".join(_text(i).strip() for i in v))
            return fold(_text(v).strip())

        if op == "equals":
            test = lambda v: norm(v) == compare  # noqa: E731
        elif op == "not_equals":
            test = lambda v: norm(v) != compare  # noqa: E731
        elif op == "is_blank":
            test = is_blank
        elif op == "is_not_blank":
            test = lambda v: not is_blank(v)  # noqa: E731
        elif op == "contains":
            if not compare:
                raise StepConfigError("Value: 'contains' needs something to look for.")
            test = lambda v: compare in norm(v)  # noqa: E731
        else:  # one_of
            test = lambda v: norm(v) in options  # noqa: E731
        self._test = test
        self._field = field
        self._then_keep = o["then_mode"] == "keep"
        self._else_keep = o["else_mode"] == "keep"
        self._then = o["then_value"] if o["then_value"] != "" else None
        self._else = o["else_value"] if o["else_value"] != "" else None

    def fields_used(self):
        return [self._field] if self._field else []

    def apply(self, value, ctx):
        subject = ctx.source.get(self._field) if self._field is not None else value
        if self._test(subject):
            return value if self._then_keep else self._then
        return value if self._else_keep else self._else


# ----------------------------------------------------------------------------- formats

_NON_DIGITS = re.compile(r"\D+")
_PHONE_FORMATS = (
    ("(999) 999-9999", "(999) 999-9999"),
    ("999-999-9999", "999-999-9999"),
    ("9999999999", "9999999999"),
    ("999.999.9999", "999.999.9999"),
)


class PhoneNumberStep(Step):
    kind = "phone"
    label = "Phone Number"
    help = "Reformat a 10-digit US phone number; a leading +1 is dropped."
    params = (Param("format", "Send as", "select", _PHONE_FORMATS, default="(999) 999-9999"),)

    def setup(self):
        fmt = self.options["format"]
        if fmt == "(999) 999-9999":
            self._fmt = lambda d: f"({d[:3]}) {d[3:6]}-{d[6:]}"
        elif fmt == "999-999-9999":
            self._fmt = lambda d: f"{d[:3]}-{d[3:6]}-{d[6:]}"
        elif fmt == "999.999.9999":
            self._fmt = lambda d: f"{d[:3]}.{d[3:6]}.{d[6:]}"
        else:
            self._fmt = lambda d: d

    def apply(self, value, ctx):
        if value is None:
            return None
        s = _text(value)
        digits = s if (s.isdigit() and s.isascii()) else _NON_DIGITS.sub("", s)
        n = len(digits)
        if n == 10:
            return self._fmt(digits)
        if n == 11 and digits[0] == "1":
            return self._fmt(digits[1:])
        if n == 0 and (not s or s.isspace()):
            return None
        raise StepError(f"{_show(s)} has {n} digit(s); a phone number needs 10.")


_SCHOOL_YEAR_FORMATS = (
    ("YYYY-YYYY", "2026-2027"),
    ("YYYY-YY", "2026-27"),
    ("YY-YY", "26-27"),
    ("START", "2026 (the year it starts)"),
    ("END", "2027 (the year it ends)"),
)


class SchoolYearStep(Step):
    kind = "school_year"
    label = "Enroll School Year"
    help = "The registration's school year in the SIS's format (ignores the current value)."
    params = (Param("format", "Send as", "select", _SCHOOL_YEAR_FORMATS, default="YYYY-YYYY"),)

    def setup(self):
        fmt = self.options["format"]
        self._fmt = {
            "YYYY-YYYY": lambda y: f"{y}-{y + 1}",
            "YYYY-YY": lambda y: f"{y}-{(y + 1) % 100:02d}",
            "YY-YY": lambda y: f"{y % 100:02d}-{(y + 1) % 100:02d}",
            "START": lambda y: str(y),
            "END": lambda y: str(y + 1),
        }[fmt]

    def apply(self, value, ctx):
        year = ctx.school_year
        start = parse_school_year(year)
        if start is None:
            raise StepError(f"The school year {_show(year)} is not like 2026-2027.")
        return self._fmt(start)


class MatchCodesStep(Step):
    kind = "match_codes"
    label = "Match Codes"
    help = "Send a code for each answer (Female -> F)."
    params = (
        Param("codes", "Codes", "codes", help="Answer -> code."),
        Param("unmatched", "An answer without a code", "select", UNMATCHED_POLICIES, default="fail"),
        Param("fallback", "Fallback code", "text", show_if=("unmatched", ("fallback",))),
    )

    def setup(self):
        o = self.options
        if o["unmatched"] == "fallback" and o["fallback"].strip() == "":
            raise StepConfigError("Fallback code: enter the code to use for answers without one.")
        self._match = CodeMatcher(o["codes"]).compile(o["unmatched"], o["fallback"])
        self._fallback = o["fallback"]

    def apply(self, value, ctx):
        code, problem = self._match(value)
        if problem is None:
            return code
        if problem == "fail":
            raise StepError(f"{_show(value)} has no code.")
        if problem == "fallback":
            ctx.warn(f"{_show(value)} has no code; sent the fallback {_show(self._fallback)}.", "unmatched_code")
        else:
            ctx.warn(f"{_show(value)} has no code; left blank.", "unmatched_code")
        return code


# Letters NFKD does not decompose, and punctuation to keep in ASCII form.
_TRANSLIT_TABLE = str.maketrans({
    "ß": "ss", "ẞ": "SS", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe", "Ø": "O", "ø": "o",
    "Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Ð": "D", "ð": "d", "Þ": "Th", "þ": "th",
    "ı": "i", "Ħ": "H", "ħ": "h", "ŀ": "l", "Ŀ": "L",
    "\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'",
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
    "\u00a0": " ", "\t": " ", "\n": " ", "\r": " ",
})
_NOT_NAME = re.compile(r"[^A-Za-z' \-]+")
_NOT_NAME_DIGITS = re.compile(r"[^A-Za-z0-9' \-]+")


class TransliterateStep(Step):
    kind = "transliterate"
    label = "Transliterate"
    help = ("Keep only plain letters, apostrophes, dashes and spaces: José -> Jose, "
            "Müller -> Muller, ß -> ss.")
    params = (Param("keep_digits", "Keep digits", "bool", default=False),)

    def setup(self):
        self._drop = (_NOT_NAME_DIGITS if self.options["keep_digits"] else _NOT_NAME).sub

    def apply(self, value, ctx):
        if value is None:
            return None
        s = _text(value)
        if s.isascii():
            if s.isalpha():  # one plain word: nothing to change
                return s
        else:
            s = unicodedata.normalize("NFKD", s.translate(_TRANSLIT_TABLE))
            s = s.encode("ascii", "ignore").decode("ascii")
        s = self._drop("", s)
        if "  " in s or s[:1] == " " or s[-1:] == " ":
            s = " ".join(s.split())
        if not s and not is_blank(value):
            raise StepError(f"{_show(value)} has no letters that can be written in plain ASCII.")
        return s or None


class MaxLengthStep(Step):
    kind = "max_length"
    label = "Max Length"
    help = "Cut the text to at most this many characters."
    params = (Param("length", "Characters", "int", required=True, min=1),)

    def setup(self):
        self._n = self.options["length"]

    def apply(self, value, ctx):
        if value is None:
            return None
        s = _text(value)
        if len(s) <= self._n:
            return s
        return s[: self._n].rstrip()


class DefaultIfBlankStep(Step):
    kind = "default"
    label = "Default If Blank"
    help = "Use this value when the current value is blank."
    params = (Param("value", "Default", "text", required=True),)

    def setup(self):
        self._value = self.options["value"]

    def apply(self, value, ctx):
        return self._value if is_blank(value) else value


_TRUE_WORDS = frozenset({"y", "yes", "true", "t", "1", "on", "checked", "x"})
_FALSE_WORDS = frozenset({"n", "no", "false", "f", "0", "off", "unchecked"})
_BOOL_FORMATS = (
    ("Y/N", "Y / N"),
    ("1/0", "1 / 0"),
    ("Yes/No", "Yes / No"),
    ("true/false", "true / false (text)"),
    ("TRUE/FALSE", "TRUE / FALSE (text)"),
    ("T/F", "T / F"),
    ("boolean", "JSON true / false"),
)


class BooleanFormatStep(Step):
    kind = "boolean"
    label = "Y/N <-> 1/0"
    help = "Rewrite a yes/no answer (Yes, Y, true, 1, checked...) in the SIS's format."
    params = (Param("format", "Send as", "select", _BOOL_FORMATS, default="Y/N"),)

    def setup(self):
        fmt = self.options["format"]
        if fmt == "boolean":
            self._yes, self._no = True, False
        else:
            self._yes, self._no = fmt.split("/")

    def apply(self, value, ctx):
        if value is None:
            return None
        if value is True or value is False:
            return self._yes if value else self._no
        if isinstance(value, (int, float)) and value in (0, 1):
            return self._yes if value else self._no
        s = _text(value).strip().lower()
        if not s:
            return None
        if s in _TRUE_WORDS:
            return self._yes
        if s in _FALSE_WORDS:
            return self._no
        raise StepError(f"{_show(value)} is not a yes or no.")


# ----------------------------------------------------------------------------- expression

#: runaway protection for one evaluation: milliseconds and nesting depth
EXPRESSION_TIMEOUT_MS = 250
EXPRESSION_MAX_DEPTH = 100


class ExpressionStep(Step):
    kind = "expression"
    label = "Expression"
    help = ("A JSONata expression over {value, answers}; $today and $school_year are "
            "available. E.g. $uppercase($substring(answers.student_legal_last_name, 0, 3)).")
    params = (Param("expression", "Expression", "textarea", required=True,
                    placeholder='answers.home_city & ", " & answers.home_state'),)

    def setup(self):
        try:
            import jsonata
        except ImportError:  # pragma: no cover - a core dependency
            raise StepConfigError("The Expression step needs the jsonata-python package.") from None
        self._jsonata = jsonata
        try:
            self._expr = jsonata.Jsonata(self.options["expression"])
        except Exception as e:  # JException, and anything the parser throws
            raise StepConfigError(f"Expression: {e}") from None

    def apply(self, value, ctx):
        frame = self._jsonata.Jsonata.Frame(None)
        frame.set_runtime_bounds(EXPRESSION_TIMEOUT_MS, EXPRESSION_MAX_DEPTH)
        frame.bind("today", ctx.today.isoformat())
        frame.bind("school_year", ctx.school_year)
        src = ctx.source
        data = {"value": value, "answers": src if isinstance(src, dict) else dict(src)}
        try:
            result = self._expr.evaluate(data, frame)
        except RecursionError:
            raise StepError("Expression: too deeply nested.") from None
        except Exception as e:
            raise StepError(f"Expression: {e}") from None
        return result


BUILTIN_STEPS = (
    DateStep, TodayStep, LowerStep, UpperStep, ProperCaseStep, TrimStep, SquishStep,
    FieldValueStep, ValueInputStep, JoinStep, PickStep, SplitStep, SubstituteStep,
    IfThenElseStep, PhoneNumberStep, SchoolYearStep, MatchCodesStep, TransliterateStep,
    MaxLengthStep, DefaultIfBlankStep, BooleanFormatStep, ExpressionStep,
)


def builtin_step_classes() -> dict[str, type[Step]]:
    """kind -> class for the built-in steps (what ``compile_mapping`` uses by default)."""
    return {cls.kind: cls for cls in BUILTIN_STEPS}


@hookimpl
def register_transformations():
    return list(BUILTIN_STEPS)
