"""Imported profiles: what an import keeps of a student for Enroll, and pre-filling a
returning student's registration with it.

A profile is per (student, connection's link scope), like a SIS link: a student met in
two SISs has two. The values are answers keyed like the form's fields, after the
Import Student Mapping and its Overwrite rule.

Pre-fill: a new registration of a student who has a profile gets every answer the
family left blank from the profile of the connection of the registration's school (else
the newest profile); what the family typed always wins. The registration page shows the
link ("Linked to SIS student N") and, beside each answer, the SIS's value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ...models import SisLink, StudentProfile, SyncConnection
from ..links import link_scope
from .rule import blank


def profile_for(student_id: int, scope: int | None = None) -> StudentProfile | None:
    """The student's imported profile on ``scope`` (a link scope), else their newest one."""
    q = StudentProfile.select().where(StudentProfile.student == student_id)
    if scope is not None:
        found = q.where(StudentProfile.connection == scope).first()
        if found is not None:
            return found
    return q.order_by(StudentProfile.imported_at.desc(), StudentProfile.id.desc()).first()


def prefill(answers: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """``answers`` with every blank one filled from ``values``; (answers, keys filled)."""
    out = dict(answers)
    filled = []
    for key, value in (values or {}).items():
        if blank(out.get(key)) and not blank(value):
            out[key] = value
            filled.append(key)
    return out, filled


def prefill_for(student_id: int, connection: SyncConnection | None, answers: Mapping[str, Any]
                ) -> tuple[dict, list[str]]:
    """``prefill`` from the student's profile for a registration at a school synced
    through ``connection``."""
    profile = profile_for(student_id, link_scope(connection))
    if profile is None:
        return dict(answers), []
    return prefill(answers, profile.values or {})


@dataclass
class ReturningStudent:
    """What the registration page says about a student an import found in the SIS."""

    profile: StudentProfile
    connection: SyncConnection | None
    sis_id: str
    #: form field key -> the SIS's value (as imported)
    values: dict

    def sis_value(self, key: str) -> Any:
        value = self.values.get(key)
        return None if blank(value) else value


def returning_student(student_id: int, connection: SyncConnection | None) -> ReturningStudent | None:
    """The imported profile shown on a registration of ``student_id`` at a school synced
    through ``connection`` (None: the student was never imported)."""
    profile = profile_for(student_id, link_scope(connection))
    if profile is None:
        return None
    conn = SyncConnection.get_or_none(SyncConnection.id == profile.connection_id)
    link = SisLink.get_or_none((SisLink.student == student_id) & (SisLink.connection == profile.connection_id))
    return ReturningStudent(profile, conn, link.sis_id if link else profile.sis_id, dict(profile.values or {}))


__all__ = ["profile_for", "prefill", "prefill_for", "ReturningStudent", "returning_student"]
