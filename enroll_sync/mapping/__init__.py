"""The mapping engine: saved mapping rows -> a function from a registration to a payload.

Pure Python (no Flask). The web UI, Send Test Record and bulk sync all use it:

    mapping = compile_mapping(rows, target_fields=adapter.target_fields(),
                              steps=plugins.step_classes(pm))
    result = mapping(source_values, MappingContext(insert=True))
    if result.ok:
        adapter.export([ExportRecord(record_id, result.payload)])

See ``engine`` for the row semantics and problem codes, ``steps`` for the step
contract plugins implement, ``builtin_steps`` for the built-in steps.
"""
from .automap import auto_map, normalise_name
from .codes import UNMATCHED_POLICIES, CodeAnswer, CodeMatcher, match_code_answers
from .context import MappingContext, StepContext, is_blank, parse_school_year, school_year_for
from .engine import (ERROR, MAPPING_TYPES, SYSTEM_PREFIXES, WARNING, CompiledMapping, CompiledRow,
                     MappingResult, Problem, RowResult, TraceStep, compile_mapping, compile_row,
                     flatten_targets, step_catalog)
from .steps import PARAM_TYPES, Param, Step, StepConfigError, StepError

__all__ = [
    "auto_map", "normalise_name",
    "UNMATCHED_POLICIES", "CodeAnswer", "CodeMatcher", "match_code_answers",
    "MappingContext", "StepContext", "is_blank", "parse_school_year", "school_year_for",
    "ERROR", "WARNING", "MAPPING_TYPES", "SYSTEM_PREFIXES", "CompiledMapping", "CompiledRow",
    "MappingResult", "Problem", "RowResult", "TraceStep", "compile_mapping", "compile_row",
    "flatten_targets", "step_catalog",
    "PARAM_TYPES", "Param", "Step", "StepConfigError", "StepError",
]
