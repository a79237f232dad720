"""Which registrations: the Quick Filters as a query, and a selection made of them.

A selection is either explicit ids (checkboxes on one page) or a filter ("select
all N matching this filter"). The filter travels instead of the ids, so selecting
100,000 registrations sends six short form fields, and the database does the work
(``INSERT ... SELECT`` when a job is created).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..ids import parse_id
from ..models import REGISTRATION_STATUSES, SYNC_STATUSES, Registration, School, Student
from .links import registration_ids_with_sis_id

#: the Quick Filters, in the order the form shows them
FILTER_FIELDS = ("status", "school", "grade", "sync_status", "school_year", "q")

#: sort key -> column (the list's sortable headers)
SORTS = {
    "form_id": Registration.form_id,
    "student": Registration.student_name,
    "school": School.name,
    "grade": Registration.grade,
    "school_year": Registration.school_year,
    "status": Registration.status,
    "sync_status": Registration.sync_status,
    "submitted": Registration.submitted_at,
    "last_synced": Registration.last_synced_at,
}
DEFAULT_SORT = ("form_id", "desc")


def _first(args: Mapping, key: str) -> str:
    value = args.get(key, "")
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return str(value or "").strip()


@dataclass(frozen=True)
class RegistrationFilter:
    """The Quick Filters. Unknown or malformed values are dropped, never an error."""

    status: str = ""
    school: int | None = None
    grade: str = ""
    sync_status: str = ""
    school_year: str = ""
    q: str = ""

    @classmethod
    def from_args(cls, args: Mapping) -> "RegistrationFilter":
        status = _first(args, "status")
        sync_status = _first(args, "sync_status")
        school = _first(args, "school")
        return cls(
            status=status if status in REGISTRATION_STATUSES else "",
            school=parse_id(school),
            grade=_first(args, "grade")[:10],
            sync_status=sync_status if sync_status in SYNC_STATUSES else "",
            school_year=_first(args, "school_year")[:20],
            q=_first(args, "q")[:100],
        )

    def to_args(self) -> dict[str, str]:
        """The non-empty filters as query/form values (for links and hidden fields)."""
        out = {}
        for name in FILTER_FIELDS:
            value = getattr(self, name)
            if value not in (None, ""):
                out[name] = str(value)
        return out

    @property
    def empty(self) -> bool:
        return not self.to_args()

    def where(self, org_id: int):
        """The condition over Registration (joined with Student and School)."""
        cond = Registration.organization == org_id
        if self.status:
            cond &= Registration.status == self.status
        if self.school is not None:
            cond &= Registration.school == self.school
        if self.grade:
            cond &= Registration.grade == self.grade
        if self.sync_status:
            cond &= Registration.sync_status == self.sync_status
        if self.school_year:
            cond &= Registration.school_year == self.school_year
        if self.q:
            term = self.q
            search = Registration.student_name.contains(term)
            # "García, Ana" is stored as "Last, First": also find "Ana García"
            parts = term.replace(",", " ").split()
            if len(parts) > 1:
                both = None
                for part in parts:
                    piece = Registration.student_name.contains(part)
                    both = piece if both is None else both & piece
                search |= both
            search |= (Student.schoolmint_id == term) | Registration.id.in_(registration_ids_with_sis_id(org_id, term))
            if parse_id(term) is not None:
                search |= Registration.form_id == parse_id(term)
            cond &= search
        return cond

    def query(self, org_id: int, *fields):
        """Registrations matching the filter, joined with Student and School."""
        return (Registration.select(*fields).join(Student).switch(Registration).join(School)
                .where(self.where(org_id)))


@dataclass(frozen=True)
class Selection:
    """What the registrar selected: ids on the page, or every registration matching a
    filter (``all_matching``). ``upto`` bounds a filter selection to registrations
    that existed when the confirmation was shown, so new arrivals are not swept in."""

    filter: RegistrationFilter = field(default_factory=RegistrationFilter)
    ids: tuple[int, ...] = ()
    all_matching: bool = False
    upto: int | None = None

    #: the most ids accepted as explicit checkboxes (a page is far smaller)
    MAX_IDS = 1000

    @classmethod
    def from_form(cls, form) -> "Selection":
        getlist = getattr(form, "getlist", None)
        raw_ids = getlist("registration_ids") if getlist else form.get("registration_ids", [])
        if isinstance(raw_ids, str):
            raw_ids = [raw_ids]
        ids = []
        for value in raw_ids or ():
            if parse_id(value) is not None:
                ids.append(parse_id(value))
        upto = _first(form, "upto")
        return cls(filter=RegistrationFilter.from_args(form),
                   ids=tuple(sorted(set(ids)))[: cls.MAX_IDS],
                   all_matching=_first(form, "all_matching") in ("1", "on", "true", "yes"),
                   upto=parse_id(upto))

    @property
    def empty(self) -> bool:
        return not self.all_matching and not self.ids

    def where(self, org_id: int):
        if self.all_matching:
            cond = self.filter.where(org_id)
            if self.upto is not None:
                cond &= Registration.id <= self.upto
            return cond
        return (Registration.organization == org_id) & Registration.id.in_(list(self.ids))

    def query(self, org_id: int, *fields):
        return (Registration.select(*fields).join(Student).switch(Registration).join(School)
                .where(self.where(org_id)))

    def form_fields(self) -> list[tuple[str, str]]:
        """Hidden fields that carry this selection to the next POST."""
        if self.all_matching:
            fields = [("all_matching", "1")] + list(self.filter.to_args().items())
            if self.upto is not None:
                fields.append(("upto", str(self.upto)))
            return fields
        return [("registration_ids", str(i)) for i in self.ids]
