"""How one registration is mapped for export: the rule Send Record, a sync job and its
Dry run share, so the three can never disagree.

The sync is an *update* when the student has a SIS link on the target connection
(``links.sis_id_for``) and an *insert* otherwise; required SIS fields count only on insert. ``ExportContexts`` holds
the two mapping contexts for a day, built once per job (or per request).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ..adapters import Outcome
from ..catalog import source_values
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


def map_for_export(compiled: CompiledMapping, reg, contexts: ExportContexts, sis_id: str | None
                   ) -> MappingResult:
    """The mapping's result for ``reg`` going to a SIS where the student is ``sis_id``
    (their link on the target connection: an update) or unknown (None: an insert).
    ``reg`` is a Registration or a row with ``school`` and ``student`` the same way."""
    ctx = contexts.update if sis_id else contexts.insert
    return compiled(source_values(reg, reg.school, reg.student, sis_id), ctx)
