"""SIS identity per connection, in Chromium: a district syncs through its Sandbox
connection, adds a Production connection, moves its schools to it with Bulk Action > Set
Sync Connection, and syncs again. Each student has a link per connection, the Dry run
says "create" for the new SIS, and an admin unlinks one through the confirmation."""
from __future__ import annotations

import re

import httpx

from playwright.sync_api import expect
from sis_powerschool.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

from .conftest import follow, free_port, htmx_swap, wait_http, enroll_sync_cmd

ADMIN = "admin@riverside.example"
PRODUCTION = "PowerSchool Production"

def arrange_mapping(stack, conn_name: str):
    stack.python(
        "from enroll_sync import create_app\n"
        "from enroll_sync.testing import save_mapping\n"
        "from tests.test_sync_support import MAPPING_ROWS\n"
        f"save_mapping(create_app(), {conn_name!r}, MAPPING_ROWS)\n")


def go_to(page, *menu):
    """Settings > ... the way a person gets there: open the menu, click the link."""
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_text("Settings", exact=True).click()
    for name in menu:
        follow(page, nav.get_by_role("link", name=name))


def set_sync_connection(page, connection: str):
    """Manage Schools > select every school but the preschool > Set Sync Connection."""
    go_to(page, "Schools/Programs")
    rows = page.locator("#school-list tbody tr")
    for i in range(rows.count()):
        name = rows.nth(i).get_by_role("checkbox").get_attribute("aria-label").removeprefix("Select ")
        if "Preschool" not in name:
            rows.nth(i).get_by_role("checkbox").check()
    page.get_by_label("Sync connection for the selected schools").select_option(label=connection)
    page.get_by_role("button", name="Set Sync Connection").click()
    expect(page.get_by_text(re.compile(rf"school\(s\) now use {connection}"))).to_be_visible()


def sync_all_approved(page, expect_create: int | None = None, expect_update: int | None = None):
    follow(page, page.get_by_role("navigation", name="Main").get_by_role("link", name="Registrations"))
    filters = page.get_by_role("search", name="Quick Filters")
    with htmx_swap(page):
        filters.get_by_role("combobox", name="Status", exact=True).select_option(label="Approved")
    page.get_by_label(re.compile(r"Select all \d+ registrations matching this filter")).check()
    page.get_by_text("Bulk Actions").click()
    with htmx_swap(page):
        page.get_by_role("button", name="Sync to SIS").click()
    confirm = page.get_by_role("dialog", name="Sync to SIS")
    with htmx_swap(page):
        confirm.get_by_role("button", name="Dry run").click()
    if expect_create is not None:
        expect(confirm.get_by_test_id("dry-run-create")).to_have_text(str(expect_create))
    if expect_update is not None:
        expect(confirm.get_by_test_id("dry-run-update")).to_have_text(str(expect_update))
    confirm.get_by_role("button", name="Proceed with Sync").click()
    page.wait_for_url(re.compile(r"/registrations/sync-jobs/\d+$"))
    expect(page.get_by_test_id("job-status")).to_have_text("Completed", timeout=90000)
    expect(page.get_by_test_id("n-failed")).to_have_text("0")


def test_a_switch_of_connection_keeps_an_id_per_sis_and_unlink_asks_first(new_page, stack):
    # a second PowerSchool: the district's Production SIS
    port = free_port()
    proc, log = stack.spawn("production", enroll_sync_cmd("sandbox", "powerschool", "--port", str(port)))
    production_url = f"http://127.0.0.1:{port}"
    wait_http(production_url + "/ws/v1/metadata", proc, log, "production sandbox")
    arrange_mapping(stack, "PowerSchool Sandbox")
    page = new_page(ADMIN)

    set_sync_connection(page, "PowerSchool Sandbox")
    syncable = stack.query("SELECT r.form_id FROM registration r JOIN school s ON s.id = r.school_id "
                           "WHERE r.status = 'Approved' AND s.sync_connection_id IS NOT NULL")
    n = len(syncable)
    sync_all_approved(page, expect_create=n, expect_update=0)

    # Production: added through Sync Service Login, its own SIS (not "Same SIS as")
    go_to(page, "Sync Service")
    page.get_by_role("button", name="Add Sync Connection").click()
    follow(page, page.get_by_role("link", name="PowerSchool"))
    page.get_by_label("Connection name").fill(PRODUCTION)
    page.get_by_label("Instance").select_option(label="Production")
    expect(page.get_by_label("SIS links")).to_have_value("")
    page.get_by_label("Server URL").fill(production_url)
    page.get_by_label("Client ID").fill(DEFAULT_CLIENT_ID)
    page.get_by_label("Client Secret").fill(DEFAULT_CLIENT_SECRET)
    page.get_by_role("button", name="Add Sync Connection").click()
    expect(page.get_by_text(f"Added {PRODUCTION}.")).to_be_visible()
    arrange_mapping(stack, PRODUCTION)

    # the schools move to Production; a new SIS: every student is a create there
    set_sync_connection(page, PRODUCTION)
    sync_all_approved(page, expect_create=n, expect_update=0)

    # one registration: a link on each connection, the header shows the school's (Production)
    form_id = syncable[0]["form_id"]
    follow(page, page.get_by_role("navigation", name="Main").get_by_role("link", name="Registrations"))
    page.goto(f"/registrations/{form_id}")
    links = page.get_by_test_id("sis-links")
    expect(links.get_by_role("row")).to_have_count(3)  # header + two links
    sandbox_row = links.get_by_role("row").filter(has_text="PowerSchool Sandbox")
    production_row = links.get_by_role("row").filter(has_text=PRODUCTION)
    sandbox_id = sandbox_row.locator("code").inner_text()
    production_id = production_row.locator("code").inner_text()
    in_sandbox = {str(s["local_id"]): str(s["id"]) for s in stack.sandbox_dump()}
    in_production = {str(s["local_id"]): str(s["id"])
                     for s in httpx.get(production_url + "/sandbox/dump", timeout=10).json()["students"]}
    assert sandbox_id == in_sandbox[str(form_id)] and production_id == in_production[str(form_id)]
    assert len(in_production) == n  # each student once
    expect(page.get_by_test_id("sis-id")).to_have_text(production_id)

    # Unlink the Production link: the confirmation is in view; Cancel keeps it, Unlink removes it
    production_row.get_by_role("button", name="Unlink").click()
    dialog = page.get_by_role("dialog", name=f"Unlink SIS ID {production_id}")
    expect(dialog).to_be_in_viewport()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(links.get_by_role("row")).to_have_count(3)
    production_row.get_by_role("button", name="Unlink").click()
    expect(dialog).to_be_in_viewport()
    with page.expect_navigation():
        dialog.get_by_role("button", name="Unlink").click()
    expect(page.get_by_text(f"Unlinked SIS ID {production_id} on {PRODUCTION}. Nothing changed in the SIS")).to_be_visible()
    expect(page.get_by_test_id("sis-id")).to_have_text("—")
    expect(page.get_by_test_id("sis-links").get_by_role("row")).to_have_count(2)
    page.get_by_text("Link changes").click()
    expect(page.locator("li").filter(has_text=f"unlinked SIS ID {production_id} on {PRODUCTION}")).to_be_visible()
    page.reload()
    expect(page.get_by_test_id("sis-id")).to_have_text("—")
