"""The walkthrough in real Chromium, each part as the role that does it.

The tests share one running stack (app + worker + PowerSchool sandbox) and run in
the walkthrough's order: the Sync Admin configures a connection, the District Admin
assigns it to schools, the Registrar syncs, the Viewer cannot, and a failure is
fixed and retried.
"""
from __future__ import annotations

import re

from playwright.sync_api import expect

from .conftest import screenshot

ADMIN = "admin@riverside.example"
SYNC_ADMIN = "sync@riverside.example"
REGISTRAR = "registrar@riverside.example"
VIEWER = "viewer@riverside.example"


def test_2_district_admin_assigns_the_connection_to_schools(new_page, stack):
    page = new_page(ADMIN)
    page.get_by_text("Settings").click()
    page.get_by_role("link", name="Schools/Programs").click()
    expect(page.get_by_role("heading", name="Manage Schools")).to_be_visible()

    # Edit a School > Primary tab: assign the API sync connection
    page.get_by_role("link", name="Edit Riverside Elementary").click()
    expect(page.get_by_role("tab", name="Primary")).to_be_visible()
    page.get_by_label("API Sync Connection").select_option(label="PowerSchool Sandbox (Sandbox)")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved Riverside Elementary.")).to_be_visible()

    # Bulk Action > Set Sync Connection on two more schools, swapped in without a reload
    page.evaluate("window.__marker = 'same page'")
    page.get_by_label("Select Oak Grove Elementary").check()
    page.get_by_label("Select Lincoln Middle School").check()
    page.get_by_label("Sync connection for the selected schools").select_option(label="PowerSchool Sandbox")
    page.get_by_role("button", name="Set Sync Connection").click()
    expect(page.get_by_text("2 school(s) now use PowerSchool Sandbox")).to_be_visible()
    assert page.evaluate("window.__marker") == "same page", "the bulk action reloaded the page"
    rows = page.locator("#school-list tbody tr")
    for name in ("Riverside Elementary", "Oak Grove Elementary", "Lincoln Middle School"):
        expect(rows.filter(has_text=name)).to_contain_text("PowerSchool Sandbox")
    expect(rows.filter(has_text="Riverside High School")).not_to_contain_text("PowerSchool Sandbox")
    screenshot(page, "manage-schools")
