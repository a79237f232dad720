"""Named permissions: each user gets a ``permissions`` list, granted one by one under
Settings > Users; the four roles become presets (names for a set of permissions).

Every existing user keeps exactly what their role allowed: the role's permissions are
written into the new column. A District Admin also gets the new Manage District
Settings permission (Settings > District was theirs through Manage Users). A role this
table does not know gets no permission at all (least privilege) and is labelled Custom.

The mapping is frozen here, as the roles stood when this migration was written, so a
later change to the presets in ``security.py`` does not change what this migration did.
"""
import json

from peewee import TextField

from . import add_column_if_missing

ROLE_PERMISSIONS = {
    "District Admin": ["View Registrations", "Edit Registrations", "Sync Service Full Access", "Manage Schools",
                       "Manage Users", "Manage District Settings"],
    "Sync Admin": ["View Registrations", "Sync Service Full Access"],
    "Registrar": ["View Registrations", "Edit Registrations"],
    "Viewer": ["View Registrations"],
}


def up(db, migrator):
    add_column_if_missing(db, migrator, "user", "permissions", TextField(null=True))
    table = '"user"'  # a reserved word in PostgreSQL
    param = db.param
    rows = db.execute_sql(f"SELECT id, role FROM {table} WHERE permissions IS NULL").fetchall()
    for user_id, role in rows:
        perms = ROLE_PERMISSIONS.get(role)
        db.execute_sql(f"UPDATE {table} SET permissions = {param}, role = {param} WHERE id = {param}",
                       (json.dumps(perms or [], separators=(",", ":")), role if perms else "Custom", user_id))
