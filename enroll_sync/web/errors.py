"""Error pages, and error answers to HTMX requests (a message in the page's flash area)."""
from __future__ import annotations

import logging

from flask import current_app, render_template, request
from flask_wtf.csrf import CSRFError

log = logging.getLogger("enroll_sync")

ERROR_MESSAGES = {
    400: "This form has expired or was not sent from Enroll Sync. Reload the page and try again.",
    403: "You do not have the permission this needs. Ask a district admin to grant it under Settings > Users.",
    404: "That no longer exists, or it belongs to another organization. Reload the page.",
    405: "That action is not available here.",
    413: "The file or form is larger than Enroll Sync accepts.",
    500: "Enroll Sync hit an unexpected error. It has been logged; try again, and tell your administrator if it keeps happening.",
}


def error_response(template, code, message=None, error=None):
    """A full error page, or for an HTMX request a message swapped into the page's
    flash area (``#flashes``) so the admin sees it where they are working."""
    message = message or ERROR_MESSAGES.get(code, "")
    if request.headers.get("HX-Request"):
        resp = current_app.response_class(
            render_template("errors/_htmx.html", message=message, code=code), code)
        resp.headers["HX-Retarget"] = "#flashes"
        resp.headers["HX-Reswap"] = "innerHTML"
        resp.headers["X-Enroll-Sync-Error"] = str(code)
        return resp
    return render_template(template, error=error, message=message), code


def register_error_handlers(app):
    def page(template, code):
        def handler(error):
            # require_permission says which permission is missing; werkzeug's own text is generic
            message = getattr(error, "description", None)
            if not message or message == type(error).description:
                message = None
            return error_response(template, code, message=message, error=error)
        return handler

    app.register_error_handler(403, page("errors/403.html", 403))
    app.register_error_handler(404, page("errors/404.html", 404))
    app.register_error_handler(405, page("errors/405.html", 405))
    app.register_error_handler(413, page("errors/413.html", 413))

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        return error_response("errors/400.html", 400, error=error)

    @app.errorhandler(500)
    def server_error(error):
        log.exception("Unhandled error")
        return error_response("errors/500.html", 500, error=error)


#: what an admin is told when an adapter failed in a way it did not explain (the details are logged)
SIS_FAILURE = "Something went wrong while talking to the SIS. The error was logged for your administrator."
