"""Settings > Schools/Programs > Manage Schools: list, Edit a School (Primary tab),
and Bulk Action > Set Sync Connection."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, request, url_for

from .. import security
from ..db import database
from ..ids import parse_id, parse_ids
from ..inputs import field_problem, limit_of
from ..models import School, SyncConnection
from . import audit, get_scoped_or_404, render, scoped

bp = Blueprint("schools", __name__, url_prefix="/settings/schools")

GRADES = ("PK", "TK", "K", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12")


def _connections():
    return list(scoped(SyncConnection).order_by(SyncConnection.name))


def _schools():
    return list(scoped(School).order_by(School.name))


@bp.route("/")
@security.require_permission(security.MANAGE_SCHOOLS)
def index():
    return render("schools/index.html", "school-list", schools=_schools(), connections=_connections(),
                  message=None)


@bp.route("/bulk/set-sync-connection", methods=["POST"])
@security.require_permission(security.MANAGE_SCHOOLS)
def bulk_set_connection():
    ids = request.form.getlist("school_ids")
    raw_conn = request.form.get("connection_id", "")
    error = None
    connection = None
    if raw_conn:
        connection = get_scoped_or_404(SyncConnection, raw_conn)
    ids = sorted(set(parse_ids(ids) or []))
    schools = list(scoped(School).where(School.id.in_(ids))) if ids else []
    if not schools:
        error = "Select at least one school."
    elif len(schools) != len(ids):
        error = "Some selected schools do not exist."
    if error is None:
        with database.atomic():
            School.update(sync_connection=connection).where(School.id.in_([s.id for s in schools])).execute()
            audit("schools.set_sync_connection", "School", None, schools=[s.id for s in schools],
                  connection=connection.id if connection else None)
        name = connection.name if connection else "no sync connection"
        message = f"Set Sync Connection: {len(schools)} school(s) now use {name}."
    else:
        message = None
    if request.headers.get("HX-Request"):
        resp = render("schools/index.html", "school-list", schools=_schools(), connections=_connections(),
                      message=message, error=error)
        return resp if error is None else (resp, 422)
    flash(error or message, "error" if error else "success")
    return redirect(url_for("schools.index"))


@bp.route("/<school_id>/edit", methods=["GET", "POST"])
@security.require_permission(security.MANAGE_SCHOOLS)
def edit(school_id):
    school = get_scoped_or_404(School, school_id)
    errors = {}
    if request.method == "POST":
        name = (request.form.get("name") or "").strip()
        number = (request.form.get("school_number") or "").strip()
        low = request.form.get("low_grade", "")
        high = request.form.get("high_grade", "")
        raw_conn = request.form.get("sync_connection", "")
        if not name:
            errors["name"] = "Enter the school's name."
        else:
            field_problem(errors, "name", name, limit_of(School.name), "The name")
        if not number:
            errors["school_number"] = "Enter the school number the SIS uses."
        elif (not field_problem(errors, "school_number", number, limit_of(School.school_number), "The school number")
              and scoped(School).where((School.school_number == number) & (School.id != school.id)).exists()):
            errors["school_number"] = "Another school already has this number."
        if low not in GRADES:
            errors["low_grade"] = "Choose the lowest grade."
        if high not in GRADES:
            errors["high_grade"] = "Choose the highest grade."
        elif low in GRADES and GRADES.index(high) < GRADES.index(low):
            errors["high_grade"] = "The highest grade must not be below the lowest."
        connection = None
        if raw_conn:
            connection = scoped(SyncConnection).where(SyncConnection.id == (parse_id(raw_conn) or 0)).first()
            if connection is None:
                errors["sync_connection"] = "Choose one of your sync connections."
        if not errors:
            before = school.sync_connection_id
            school.name, school.school_number, school.low_grade, school.high_grade = name, number, low, high
            school.sync_connection = connection
            with database.atomic():
                school.save()
                audit("school.update", "School", school.id, name=name, school_number=number,
                      connection_before=before, connection=connection.id if connection else None)
            flash(f"Saved {school.name}.", "success")
            return redirect(url_for("schools.index"))
        school.name, school.school_number, school.low_grade, school.high_grade = name, number, low, high
    status = 422 if errors else 200
    return render("schools/edit.html", None, school=school, connections=_connections(), grades=GRADES,
                  errors=errors), status
