"""Settings > District: the Registration module switch that gates every export."""
from __future__ import annotations

from enroll_sync.db import database
from enroll_sync.models import AuditLog, Organization, SyncConnection


def test_district_admin_turns_the_registration_module_off_and_exports_say_so(app, live, login):
    admin = login("District Admin")
    page = admin.page("/settings/district/")
    assert page.status_code == 200 and "uses Enroll's Registration module" in page.text
    assert admin.post_form("/settings/district/", {}).status_code == 302  # unticked = off
    with app.app_context(), database.connection_context():
        assert Organization.get().uses_registration_module is False
        assert AuditLog.select().where(AuditLog.action == "organization.registration_module").count() == 1
        conn = SyncConnection.get(SyncConnection.adapter == "powerschool")
    mapping = admin.get(f"/settings/sync-service/{conn.id}/mapping/export_student/configure")
    assert "Registration module" in mapping.text
    registrar = login("Registrar")
    registrar.page("/registrations/")
    confirm = registrar.post_form("/registrations/sync/confirm", {"all_matching": "1", "status": "Approved"})
    assert "only available to organizations that use the Registration module" in confirm.text
    assert admin.post_form("/settings/district/", {"uses_registration_module": "on"}).status_code == 302
    with app.app_context(), database.connection_context():
        assert Organization.get().uses_registration_module is True


def test_only_manage_users_reaches_district_settings(live, login):
    for role in ("Sync Admin", "Registrar", "Viewer"):
        assert login(role).get("/settings/district/").status_code == 403
