"""How one registration is mapped for export: the rule Send Record, a sync job and its
Dry run share, so the three can never disagree.

The sync is an *update* when the student's SIS id is known (``student_sis_id``) and an
*insert* otherwise; required SIS fields count only on insert. ``ExportContexts`` holds
the two mapping contexts for a day, built once per job (or per request).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ..adapters import Outcome
from ..catalog import source_values, student_sis_id
from ..mapping.context import MappingContext
from ..mapping.engine import CompiledMapping, MappingResult
from ..models import SYNC_FAILED, SYNC_PARTIAL, SYNC_SUCCEEDED

#: the Sync Status each adapter outcome gives a record
STATUS_OF_OUTCOME = {Outcome.SUCCEEDED: SYNC_SUCCEEDED, Outcome.PARTIAL: SYNC_PARTIAL,
                     Outcome.FAILED: SYNC_FAILED}


def status_for(outcome: Outcome) -> str:
    return STATUS_OF_OUTCOME.get(outcome, SYNC_FAILED)


@dataclass(frozen=True)
class ExportContexts:
    insert: MappingContext
    update: MappingContext

    @classmethod
    def for_day(cls, today: dt.date | None = None) -> "ExportContexts":
        today = today or dt.date.today()
        return cls(MappingContext(today=today, insert=True), MappingContext(today=today, insert=False))


def map_for_export(compiled: CompiledMapping, reg, contexts: ExportContexts) -> tuple[str | None, MappingResult]:
    """(the SIS id when the export is an update, else None; the mapping's result).
    ``reg`` is a Registration or a row with ``school`` and ``student`` the same way."""
    sis_id = student_sis_id(reg)
    ctx = contexts.update if sis_id else contexts.insert
    return sis_id, compiled(source_values(reg, reg.school, reg.student), ctx)
