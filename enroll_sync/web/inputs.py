"""The input rules of ``enroll_sync.inputs`` applied to every request before its view
runs: a NUL byte in the path, a query string or a form (names, values, file names) is
refused with a clear message, as is a query-string value longer than any filter uses.

Views still check each field against its own declared limit, so the message appears
at the field; this gate is what makes a route nobody thought of safe too."""
from __future__ import annotations

from flask import request

from ..inputs import NUL, QUERY_VALUE_MAX, first_problem, nul_message
from .errors import error_response


def request_problem() -> str | None:
    """Why this request's input is refused, or None."""
    if NUL in request.path:
        return nul_message("The address")
    problem = first_problem(request.args.items(multi=True), QUERY_VALUE_MAX)
    if problem:
        return problem
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        problem = first_problem(request.form.items(multi=True))
        if problem:
            return problem
        problem = first_problem((name, f.filename or "") for name, f in request.files.items(multi=True))
        if problem:
            return problem
    return None


def init_input_rules(app) -> None:
    @app.before_request
    def _refuse_bad_input():
        problem = request_problem()
        if problem:
            return error_response("errors/400.html", 400, problem)
        return None
