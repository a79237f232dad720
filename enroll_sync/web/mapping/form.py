"""The Export Student Mapping editor: examples, the form state of the Field Mapping
tab, and what each row shows.

The mapping being edited lives in the Field Mapping form until the admin clicks
Save: every row posts its cells with names ``<To Field key>|<attr>``; a changed
cell re-renders its row from the posted form (``parse_row`` -> ``build_row``)
without storing anything. ``saved_row`` turns a row's state into what is stored in
``Mapping.rows`` (docs/architecture.md). The values shown (Mapped Value, the value
after each transformation step, Match Codes warnings) all come from the one mapping
engine in ``enroll_sync.mapping``.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ...adapters import FieldSection, TargetField
from ...catalog import Catalog, load_catalog  # noqa: F401 (load_catalog: ui.load_catalog)
from ...mapping.automap import auto_map
from ...mapping.codes import UNMATCHED_POLICIES, CodeAnswer, match_code_answers
from ...mapping.context import MappingContext
from ...mapping.engine import ERROR, MAPPING_TYPES, Problem, compile_row, flatten_targets
from ...mapping.steps import Param, StepConfigError
from ...sync.mappings.examples import Example, answer_options, seen_values
from ...sync.mappings.versions import clean_row_parts

SEP = "|"
TYPE_LABELS = dict(MAPPING_TYPES)
POLICY_LABELS = dict(UNMATCHED_POLICIES)
#: rows whose To Field the SIS no longer lists
OTHER_SECTION = FieldSection("_other", "Other fields (not in this SIS's field list)")
#: problems that mean "this example's value breaks a rule of the SIS field"
VALUE_PROBLEM_CODES = ("too_long", "invalid_code", "invalid_type", "unmatched_code", "step_error", "step_bug")








# --------------------------------------------------------------------------- examples













# --------------------------------------------------------------------------- row state <-> form

def name(key: str, *attrs: Any) -> str:
    return SEP.join([key, *map(str, attrs)])


def slug(key: str) -> str:
    return "row-" + re.sub(r"[^A-Za-z0-9_-]", "-", key)


def posted_keys(form) -> list[str]:
    """The To Field keys of the rows in a posted Field Mapping form, in form order."""
    suffix = SEP + "to"
    out = []
    for k in form.keys():
        if k.endswith(suffix):
            key = form.get(k)
            if key == k[: -len(suffix)] and key not in out:
                out.append(key)
    return out


def _parse_codes_text(text: str) -> dict[str, str]:
    out = {}
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        answer, _, code = line.partition("=")
        out[answer.strip()] = code.strip()
    return out


def _param_value(form, prefix: str, p: Param) -> Any:
    n = name(prefix, p.key)
    if p.type == "fields":
        return [v for v in form.getlist(n) if v.strip()]
    if p.type == "bool":
        values = form.getlist(n)
        return values[-1] if values else None
    if p.type == "codes":
        raw = form.get(n)
        return None if raw is None else _parse_codes_text(raw)
    return form.get(n)


def parse_row(form, key: str, step_map: dict) -> dict:
    """One row's state from the posted form (see the module docstring)."""
    state: dict[str, Any] = {"to": key}
    stash = form.get(name(key, "stash"))
    if stash:
        try:
            data = json.loads(stash)
        except ValueError:
            data = {}
        if isinstance(data, dict):
            state.update(clean_row_parts(data))
    state["type"] = form.get(name(key, "type")) or "do_not_map"
    frm = (form.get(name(key, "from")) or "").strip()
    if frm:
        state["from"] = frm
    codes_for = form.get(name(key, "codes"))
    if codes_for is not None:
        # the From Enroll Field the codes were made for; a different one starts over (resolve_fields)
        state["_codes_for"] = codes_for
        answers = form.getlist(name(key, "code_answer"))
        values = form.getlist(name(key, "code_value"))
        codes = {}
        for a, c in zip(answers, values):
            if c.strip():
                codes[a] = c.strip()
        state["codes"] = codes
        state["unmatched"] = form.get(name(key, "unmatched")) or "fail"
        state["fallback"] = (form.get(name(key, "fallback")) or "").strip()
    if form.get(name(key, "steps")) is not None:
        steps = []
        i = 0
        while form.get(name(key, f"s{i}", "kind")) is not None:
            prefix = name(key, f"s{i}")
            kind = form.get(name(prefix, "kind"))
            spec: dict[str, Any] = {"kind": kind}
            cls = step_map.get(kind)
            for p in getattr(cls, "params", ()) if cls else ():
                v = _param_value(form, prefix, p)
                if v is not None:
                    spec[p.key] = v
            steps.append(spec)
            i += 1
        state["steps"] = steps
    if form.get(name(key, "proposed")):
        state["proposed"] = True
    return state


def resolve_fields(state: dict, catalog: Catalog, step_map: dict) -> dict:
    """Accept a typed field label ("Birth Date") where a field key is expected."""
    by_label = {}
    for key, label in catalog.labels.items():
        by_label.setdefault(label.strip().casefold(), key)

    def fix(v):
        if isinstance(v, str) and v and v not in catalog.labels:
            return by_label.get(v.strip().casefold(), v.strip())
        return v

    if state.get("from"):
        state["from"] = fix(state["from"])
    codes_for = state.pop("_codes_for", None)
    if codes_for is not None and fix(codes_for) != state.get("from", ""):
        state.pop("codes", None)  # other answers: start from the suggestions again
    for spec in state.get("steps") or []:
        cls = step_map.get(spec.get("kind")) if isinstance(spec, dict) else None
        for p in getattr(cls, "params", ()) if cls else ():
            if p.type == "field" and p.key in spec:
                spec[p.key] = fix(spec[p.key])
            elif p.type == "fields" and isinstance(spec.get(p.key), list):
                spec[p.key] = [fix(v) for v in spec[p.key]]
    return state


def state_from_saved(row: dict) -> dict:
    """A saved row as the editor's state (rows written by older versions or imported
    documents are cleaned the same way as a posted stash)."""
    state = {k: v for k, v in dict(row).items() if k not in ("codes", "unmatched", "fallback", "steps")}
    state.update(clean_row_parts(row))
    state.setdefault("type", "do_not_map")
    return state


def _clean_step(spec: dict, step_map: dict) -> dict:
    cls = step_map.get(spec.get("kind"))
    if cls is None:
        return dict(spec)
    try:
        return cls(**{k: v for k, v in spec.items() if k != "kind"}).to_dict()
    except Exception:  # kept as typed; the engine reports the problem on the row
        return dict(spec)


def engine_row(state: dict, step_map: dict | None = None) -> dict:
    """The row as the mapping engine reads it (only what the Mapping Type uses)."""
    t = state.get("type") or "do_not_map"
    row: dict[str, Any] = {"to": state["to"], "type": t}
    if t == "do_not_map":
        return row
    if state.get("from"):
        row["from"] = state["from"]
    if t == "match_codes":
        row["codes"] = dict(state.get("codes") or {})
        row["unmatched"] = state.get("unmatched") or "fail"
        if row["unmatched"] == "fallback":
            row["fallback"] = state.get("fallback") or ""
    elif t == "transformation":
        steps = list(state.get("steps") or [])
        row["steps"] = [_clean_step(s, step_map) for s in steps] if step_map is not None else steps
    return row


def saved_row(state: dict, step_map: dict) -> dict | None:
    """What ``Mapping.rows`` keeps for this row; None for Do Not Map (absence means Do Not Map)."""
    if (state.get("type") or "do_not_map") == "do_not_map":
        return None
    return engine_row(state, step_map)


def stash_of(state: dict) -> str:
    """The editors the current Mapping Type hides, kept so switching back restores them."""
    t = state.get("type")
    keep = {}
    if t != "match_codes":
        for k in ("codes", "unmatched", "fallback"):
            if k in state:
                keep[k] = state[k]
    if t != "transformation" and "steps" in state:
        keep["steps"] = state["steps"]
    return json.dumps(keep, ensure_ascii=False) if keep else ""


def suggest_codes(answers: Iterable[str], target: TargetField | None) -> dict[str, str]:
    """Codes for answers that equal a SIS code or its label (Female -> F)."""
    if target is None or not target.codes:
        return {}
    by_text = {}
    for c in target.codes:
        by_text.setdefault(c.value.strip().casefold(), c.value)
        if c.label:
            by_text.setdefault(c.label.strip().casefold(), c.value)
    out = {}
    for a in answers:
        code = by_text.get(str(a).strip().casefold())
        if code is not None:
            out[str(a)] = code
    return out


def apply_action(state: dict, action: str, form, step_map: dict) -> str | None:
    """Apply a row button (add/remove/move a step, discard a proposal). Returns an error message."""
    verb, _, rest = action.partition(":")
    key = state["to"]
    if verb == "discard":
        state["type"] = "do_not_map"
        state.pop("from", None)
        state.pop("proposed", None)
        return None
    steps = list(state.get("steps") or [])
    if verb == "add_step":
        kind = form.get(name(key, "new_step")) or ""
        if kind not in step_map:
            return "Choose a step to add."
        steps.append({"kind": kind})
        state["type"] = "transformation"
    else:
        try:
            i = int(rest.rpartition(":")[2])
        except ValueError:
            return "Unknown step."
        if not 0 <= i < len(steps):
            return "Unknown step."
        if verb == "remove_step":
            steps.pop(i)
        elif verb == "up_step" and i > 0:
            steps[i - 1], steps[i] = steps[i], steps[i - 1]
        elif verb == "down_step" and i < len(steps) - 1:
            steps[i + 1], steps[i] = steps[i], steps[i + 1]
    state["steps"] = steps
    return None


def action_row(action: str) -> str | None:
    """The To Field key a row action is for ("add_step:name.first_name", "up_step:key:2")."""
    verb, _, rest = (action or "").partition(":")
    if verb == "discard" or verb == "add_step":
        return rest or None
    if verb in ("remove_step", "up_step", "down_step"):
        return rest.rpartition(":")[0] or None
    return None


# --------------------------------------------------------------------------- what a row shows

def show_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass
class ParamView:
    param: Param
    value: Any
    name: str
    id: str
    shown: bool


@dataclass
class StepView:
    index: int
    kind: str
    label: str
    help: str
    known: bool
    params: list[ParamView]
    error: str | None = None       # a setting that cannot work (StepConfigError)
    value: Any = None              # the example's value after this step
    value_error: str | None = None  # the step could not apply to the example
    reached: bool = False


@dataclass
class RowView:
    key: str
    slug: str
    target: TargetField | None
    state: dict
    from_label: str
    value: Any = None
    has_value: bool = False
    problems: list[Problem] = field(default_factory=list)
    first_value: Any = None
    first_reached: bool = False
    steps: list[StepView] = field(default_factory=list)
    codes: list[CodeAnswer] = field(default_factory=list)
    note: str | None = None
    stash: str = ""

    @property
    def type(self) -> str:
        return self.state.get("type") or "do_not_map"

    @property
    def mapped(self) -> bool:
        return self.type != "do_not_map"

    @property
    def value_text(self) -> str:
        return show_value(self.value)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != ERROR]

    @property
    def unmatched(self) -> list[CodeAnswer]:
        return [c for c in self.codes if c.unmatched]

    @property
    def label(self) -> str:
        return (self.target.label if self.target else "") or self.key

    @property
    def search_text(self) -> str:
        return " ".join([self.key, self.label, self.from_label, TYPE_LABELS.get(self.type, "")]).lower()


@dataclass
class EditorContext:
    """What every row of one editor render shares."""

    org_id: int
    catalog: Catalog
    sections: list[FieldSection]
    targets: dict[str, TargetField]
    step_map: dict
    source: dict | None
    today: dt.date
    _seen: dict = field(default_factory=dict)

    @property
    def mapping_ctx(self) -> MappingContext:
        return MappingContext(today=self.today, insert=None)

    def seen(self, key: str) -> dict[str, int]:
        if key not in self._seen:
            self._seen[key] = seen_values(self.org_id, key)
        return self._seen[key]


def _step_views(state: dict, prefix_key: str, ctx: EditorContext) -> list[StepView]:
    views = []
    for i, spec in enumerate(state.get("steps") or []):
        spec = spec if isinstance(spec, dict) else {}
        kind = str(spec.get("kind") or "")
        cls = ctx.step_map.get(kind)
        prefix = name(prefix_key, f"s{i}")
        params, error = [], None
        if cls is None:
            error = f"Unknown transformation “{kind}” (is its plugin installed?)."
        else:
            settings = {k: v for k, v in spec.items() if k != "kind"}
            try:
                cls(**settings)
            except StepConfigError as e:
                error = e.message
            except Exception as e:  # a broken plugin step: say so on the row, never a 500
                error = f"This step cannot be set up ({type(e).__name__}: {e})."
            for p in cls.params:
                value = spec.get(p.key, p.default)
                shown = True
                if p.show_if:
                    other, allowed = p.show_if
                    other_value = spec.get(other)
                    if other_value is None:
                        other_param = next((q for q in cls.params if q.key == other), None)
                        other_value = other_param.default if other_param else None
                    shown = str(other_value) in allowed
                params.append(ParamView(p, value, name(prefix, p.key),
                                        slug(prefix_key) + f"-s{i}-{p.key}", shown))
        views.append(StepView(index=i, kind=kind, label=getattr(cls, "label", kind) or kind,
                              help=getattr(cls, "help", ""), known=cls is not None, params=params, error=error))
    return views


def build_row(state: dict, ctx: EditorContext, note: str | None = None) -> RowView:
    """Evaluate one row for the example with the mapping engine."""
    key = state["to"]
    target = ctx.targets.get(key)
    view = RowView(key=key, slug=slug(key), target=target, state=state,
                   from_label=ctx.catalog.label(state.get("from")), note=note, stash=stash_of(state))
    t = view.type
    if t == "match_codes" and state.get("from") and "codes" not in state:
        # first time this row is Match Codes: fill in the answers that equal a SIS code or its label
        frm = state["from"]
        answers = [str(o) for o in answer_options(ctx.org_id, frm, ctx.catalog.options.get(frm, ()))] + list(ctx.seen(frm))
        state["codes"] = suggest_codes(answers, target)
    row = engine_row(state)
    compiled = compile_row(row, ctx.sections, ctx.step_map, source_fields=ctx.catalog.keys)
    problems = list(compiled.config_problems)
    if ctx.source is not None:
        res = compiled.evaluate(ctx.source, ctx.mapping_ctx)
        view.value, view.has_value = res.value, True
        for p in res.problems:
            if p not in problems:
                problems.append(p)
    view.problems = problems
    if t == "match_codes" and state.get("from"):
        frm = state["from"]
        options = answer_options(ctx.org_id, frm, ctx.catalog.options.get(frm, ()))
        seen = dict(ctx.seen(frm))
        codes = dict(state.get("codes") or {})
        for answer in codes:  # keep codes typed for answers no longer offered or seen
            if answer not in seen and answer not in [str(o) for o in options]:
                seen[answer] = 0
        view.codes = match_code_answers(options, seen, codes,
                                        allowed_codes=target.codes if target is not None and target.codes else None)
    if t == "transformation":
        view.steps = _step_views(state, key, ctx)
        if ctx.source is not None:
            _fill_trace(view, state, ctx)
    return view


def _fill_trace(view: RowView, state: dict, ctx: EditorContext) -> None:
    """The example's value after each step; a step with bad settings ends the preview."""
    steps = list(state.get("steps") or [])
    usable = len(steps)
    for sv in view.steps:
        if sv.error:
            usable = sv.index
            break
    row = engine_row({**state, "steps": steps[:usable]})
    if not row.get("steps") and not row.get("from"):
        return
    compiled = compile_row(row, ctx.sections, ctx.step_map, source_fields=ctx.catalog.keys)
    try:
        trace = compiled.trace(ctx.source, ctx.mapping_ctx)
    except Exception:  # the engine reports step bugs itself; this is belt and braces
        return
    if trace and trace[0].label == "Configuration":
        return
    lines = list(trace)
    if state.get("from") and lines:
        first = lines.pop(0)
        view.first_value, view.first_reached = first.value, True
    for sv, line in zip(view.steps, lines):
        sv.reached = True
        sv.value, sv.value_error = line.value, line.error


def section_counts(rows: Iterable[RowView]) -> tuple[int, int]:
    """(mapped rows, required To Fields left unmapped)."""
    mapped = required = 0
    for r in rows:
        if r.mapped:
            mapped += 1
        elif r.target is not None and r.target.required:
            required += 1
    return mapped, required


@dataclass
class SectionView:
    section: FieldSection
    rows: list[RowView]

    @property
    def id(self) -> str:
        return "section-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.section.key)

    @property
    def counts(self) -> tuple[int, int]:
        return section_counts(self.rows)


def build_sections(states: dict[str, dict], ctx: EditorContext, notes: dict[str, str] | None = None
                   ) -> list[SectionView]:
    notes = notes or {}
    out = []
    for section in ctx.sections:
        rows = []
        for t in section.fields:
            state = states.get(t.key) or {"to": t.key, "type": "do_not_map"}
            rows.append(build_row(state, ctx, notes.get(t.key)))
        out.append(SectionView(section, rows))
    extra = [build_row(s, ctx, notes.get(k)) for k, s in states.items()
             if k not in ctx.targets and (s.get("type") or "do_not_map") != "do_not_map"]
    if extra:
        out.append(SectionView(OTHER_SECTION, extra))
    return out


def section_of(key: str, sections: list[FieldSection]) -> FieldSection:
    for s in sections:
        if any(f.key == key for f in s.fields):
            return s
    return OTHER_SECTION


def propose(states: dict[str, dict], catalog: Catalog, sections: list[FieldSection]) -> list[str]:
    """Auto-map: fill unmapped rows with the engine's proposals (marked, not saved)."""
    existing = [engine_row(s) for s in states.values()]
    proposals = auto_map(catalog.entries, sections, existing)
    done = []
    for row in proposals:
        key = row.get("to")
        if not key or (states.get(key, {}).get("type") or "do_not_map") != "do_not_map":
            continue
        states[key] = {**row, "proposed": True}
        done.append(key)
    return done


def summary(compiled, examples: list[Example], today: dt.date) -> dict:
    """The Save summary: required SIS fields unmapped, row problems, example values that break a rule."""
    values = []
    for ex in examples:
        res = compiled(ex.source, MappingContext(today=today, insert=None))
        for p in res.problems:
            if p.code in VALUE_PROBLEM_CODES:
                values.append((ex, p))
    config = [p for p in compiled.config_problems]
    return {"unmapped_required": list(compiled.unmapped_required), "config": config, "values": values}


def flatten(sections: list[FieldSection]) -> dict[str, TargetField]:
    return flatten_targets(sections)
