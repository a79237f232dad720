"""The walkthrough in real Chromium, each part as the role that does it.

The tests share one running stack (the app, its ``enroll-sync worker`` huey consumer
and the PowerSchool sandbox, each its own process, see conftest.py) and run in the
walkthrough's order: the Sync Admin adds and maps a connection and sends a test record,
the District Admin assigns it to schools, the Registrar bulk-syncs the Approved
registrations, the Viewer cannot, and a student the SIS rejects is fixed in the mapping
and retried.

Every HTMX gesture is made the way a person makes it (choose an option, type and Tab
away, click a button) and the answer is waited for on the page; ``window.__marker``
proves that a part of the page was swapped rather than the page reloaded. The
``new_page`` fixture fails a test on any JavaScript error, failed request or HTTP
error response, so a missing CSRF header (400) or a broken hx-* attribute fails it.
"""
from __future__ import annotations

import json
import re

from playwright.sync_api import expect

from sis_powerschool.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

from .conftest import axe_check, follow, htmx_swap, screenshot

ADMIN = "admin@riverside.example"
SYNC_ADMIN = "sync@riverside.example"
REGISTRAR = "registrar@riverside.example"
VIEWER = "viewer@riverside.example"

CONNECTION = "Riverside PowerSchool"
#: the schools the District Admin gives the connection (scenario 2), by school number
ASSIGNED = {"101": "Riverside Elementary", "102": "Oak Grove Elementary", "201": "Lincoln Middle School"}
#: Enroll school number -> PowerSchool sandbox school number
SCHOOL_CODES = {"101": "100", "102": "100", "201": "200", "301": "300"}
#: the student whose last name the district's SIS refuses in scenario 5
REJECTED_LAST_NAME = "O'Brien"


def approved_at_assigned_schools(stack) -> list[dict]:
    rows = stack.query(
        "SELECT r.form_id, r.answers, r.grade, s.school_number, st.schoolmint_id FROM registration r "
        "JOIN school s ON s.id = r.school_id JOIN student st ON st.id = r.student_id "
        f"WHERE r.status = 'Approved' AND s.school_number IN ({','.join('?' * len(ASSIGNED))}) "
        "ORDER BY r.form_id", *ASSIGNED)
    return [dict(form_id=r["form_id"], answers=json.loads(r["answers"]), grade=r["grade"],
                 school_number=r["school_number"], schoolmint_id=r["schoolmint_id"]) for r in rows]


def ymd(us_date: str) -> str:
    month, day, year = us_date.split("/")
    return f"{year}-{month}-{day}"


def pick_examples(stack):
    """The Registration Example (a Female student born MM/DD/YYYY) and the Student Example (a Male one)."""
    def fits(r, gender):
        a = r["answers"]
        return (a.get("gender") == gender and re.fullmatch(r"\d\d/\d\d/\d{4}", a.get("birth_date") or "")
                and a["student_legal_first_name"] == a["student_legal_first_name"].strip()
                and a["student_legal_last_name"] != REJECTED_LAST_NAME)
    regs = approved_at_assigned_schools(stack)
    return next(r for r in regs if fits(r, "Female")), next(r for r in regs if fits(r, "Male"))


def go_to(page, *menu):
    """Settings > ... the way a person gets there: open the menu, click the link."""
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_text("Settings", exact=True).click()
    for name in menu:
        follow(page, nav.get_by_role("link", name=name))


def choose(page, label: str, option: str):
    """Pick an option in a select that re-renders its Field Mapping row through HTMX."""
    with htmx_swap(page):
        page.get_by_label(label, exact=True).select_option(option)


def type_in(page, label: str, text: str):
    """Type into a field of a Field Mapping row and Tab away (the change re-renders the row)."""
    page.get_by_label(label, exact=True).fill(text)
    with htmx_swap(page):
        page.get_by_label(label, exact=True).press("Tab")


def click(page, role: str, name: str):
    with htmx_swap(page):
        page.get_by_role(role, name=name, exact=True).click()


def open_section(page, name: str):
    section = page.locator("details.mapping-section").filter(
        has=page.locator("summary", has_text=re.compile(rf"^\s*{re.escape(name)}\b")))
    if section.get_attribute("open") is None:
        section.locator("summary").click()
    expect(section).to_have_attribute("open", "")


def show_example(page, text: str):
    """Mapped Value shows: the example whose label contains ``text``."""
    select = page.get_by_label("Mapped Value shows")
    label = next(t for t in select.locator("option").all_inner_texts() if text in t)
    with htmx_swap(page):
        select.select_option(label=label)


def mapped_value(page, label: str):
    """The Mapped Value cell of the row whose To Field is ``label``."""
    row = page.locator("tbody.mapping-row").filter(has=page.get_by_label(f"Mapping Type for {label}", exact=True))
    return row.get_by_test_id("mapped-value")


def test_1_sync_admin_adds_maps_and_sends_a_test_record(new_page, stack):
    example, student_example = pick_examples(stack)
    a = example["answers"]
    page = new_page(SYNC_ADMIN)

    # Settings > Sync Service > Sync Service Login > Add Sync Connection
    go_to(page, "Sync Service")
    expect(page.get_by_role("heading", name="Sync Service Login")).to_be_visible()
    page.get_by_role("button", name="Add Sync Connection").click()
    follow(page, page.get_by_role("link", name="PowerSchool"))
    page.get_by_label("Connection name").fill(CONNECTION)
    page.get_by_label("Instance").select_option(label="Sandbox")
    page.get_by_label("Server URL").fill(stack.sandbox_url)
    page.get_by_label("Client ID").fill(DEFAULT_CLIENT_ID)
    page.get_by_label("Client Secret").fill(DEFAULT_CLIENT_SECRET)
    page.get_by_role("button", name="Add Sync Connection").click()
    expect(page.get_by_text(f"Added {CONNECTION}.")).to_be_visible()
    card = page.get_by_role("article", name=CONNECTION)
    expect(card.get_by_test_id("last-check")).to_contain_text("Not checked yet")
    expect(card).not_to_contain_text(DEFAULT_CLIENT_SECRET)

    # Test Connection: the card is swapped in place, the page stays
    page.evaluate("window.__marker = 'connections'")
    card.get_by_role("button", name="Test Connection").click()
    expect(card.get_by_test_id("last-check")).to_contain_text("Connected")
    expect(card.get_by_test_id("check-message")).to_contain_text("Sandbox Unified School District")
    assert page.evaluate("window.__marker") == "connections", "Test Connection reloaded the page"
    screenshot(page, "sync-service-connections", at=card, block="end")

    # Configure Mapping > Export Student Mapping > Configure: the examples
    follow(page, card.get_by_role("button", name="Configure Mapping"))
    follow(page, page.get_by_role("link", name="Export Student Mapping"))
    expect(page.get_by_role("tab", name="Configure")).to_have_attribute("aria-selected", "true")
    page.get_by_label("Registration Example 1").fill(str(example["form_id"]))
    page.get_by_label("Student Example 1").fill(student_example["schoolmint_id"])
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved the examples.")).to_be_visible()
    expect(page.get_by_test_id("examples")).to_contain_text(str(example["form_id"]))
    follow(page, page.get_by_role("tab", name="Field Mapping"))
    expect(page.get_by_label("Mapped Value shows")).to_contain_text(f"Registration Form ID {example['form_id']}")

    # from here on every change is an HTMX swap: the page must never reload
    page.evaluate("window.__marker = 'field mapping'")

    # a Direct row
    expect(page.get_by_label("Mapping Type for First Name", exact=True)).to_have_value("do_not_map")
    expect(mapped_value(page, "First Name")).to_have_text("(blank)")
    choose(page, "Mapping Type for First Name", "direct")
    type_in(page, "From Enroll Field for First Name", "student_legal_first_name")
    expect(mapped_value(page, "First Name")).to_have_text(a["student_legal_first_name"])
    expect(page.get_by_text("Unsaved changes")).to_be_visible()

    # a Match Codes row: Female > F
    open_section(page, "Demographics")
    expect(mapped_value(page, "Gender")).to_have_text("(blank)")
    choose(page, "Mapping Type for Gender", "match_codes")
    type_in(page, "From Enroll Field for Gender", "gender")
    choose(page, "SIS code for Female (Gender)", "F")
    choose(page, "SIS code for Male (Gender)", "M")
    expect(mapped_value(page, "Gender")).to_have_text("F")
    expect(page.get_by_text("1 answer without a code: Non-binary.")).to_be_visible()
    choose(page, "An answer without a code (Gender)", "blank")

    # a Date transformation: MM/DD/YYYY -> YYYY-MM-DD, the value after each step shown live
    expect(mapped_value(page, "Birth Date")).to_have_text("(blank)")
    choose(page, "Mapping Type for Birth Date", "transformation")
    type_in(page, "From Enroll Field for Birth Date", "birth_date")
    expect(mapped_value(page, "Birth Date")).to_have_text(a["birth_date"])  # no step yet: as typed
    page.get_by_label("Step to add (Birth Date)").select_option(label="Date")
    click(page, "button", "Add step (Birth Date)")
    choose(page, "Stored as (step 1, Birth Date)", "MM/DD/YYYY")
    birth_row = page.locator("tbody.mapping-row").filter(has=page.get_by_label("Mapping Type for Birth Date"))
    expect(birth_row.get_by_test_id("trace-from")).to_have_text(a["birth_date"])
    expect(birth_row.get_by_test_id("step-value")).to_have_text(ymd(a["birth_date"]))
    expect(mapped_value(page, "Birth Date")).to_have_text(ymd(a["birth_date"]))
    assert page.evaluate("window.__marker") == "field mapping", "a Field Mapping change reloaded the page"
    screenshot(page, "field-mapping", at=page.locator("details.mapping-section", has_text="Demographics"))

    # what else PowerSchool requires for a new student
    choose(page, "Mapping Type for Student Number (local_id)", "direct")
    type_in(page, "From Enroll Field for Student Number (local_id)", "registration.form_id")
    expect(mapped_value(page, "Student Number (local_id)")).to_have_text(str(example["form_id"]))
    choose(page, "Mapping Type for Last Name", "direct")
    type_in(page, "From Enroll Field for Last Name", "student_legal_last_name")
    expect(mapped_value(page, "Last Name")).to_have_text(a["student_legal_last_name"])
    open_section(page, "School Enrollment")
    choose(page, "Mapping Type for School", "match_codes")
    type_in(page, "From Enroll Field for School", "school.school_number")
    for answer, code in SCHOOL_CODES.items():
        choose(page, f"SIS code for {answer} (School)", code)
    choose(page, "An answer without a code (School)", "fail")
    expect(mapped_value(page, "School")).to_have_text(SCHOOL_CODES[example["school_number"]])
    # Grade Level: K is 0 in PowerSchool, other grades are sent as they are
    choose(page, "Mapping Type for Grade Level", "transformation")
    type_in(page, "From Enroll Field for Grade Level", "registration.grade")
    page.get_by_label("Step to add (Grade Level)").select_option(label="If Then Else")
    click(page, "button", "Add step (Grade Level)")
    type_in(page, "Value (step 1, Grade Level)", "K")
    type_in(page, "Then value (step 1, Grade Level)", "0")
    expect(mapped_value(page, "Grade Level")).to_have_text("0" if example["grade"] == "K" else example["grade"])
    for label, step, setting in (("Entry Date", "Today", None), ("Exit Date", "Value Input", "2027-06-10")):
        choose(page, f"Mapping Type for {label}", "transformation")
        page.get_by_label(f"Step to add ({label})").select_option(label=step)
        click(page, "button", f"Add step ({label})")
        if setting:
            type_in(page, f"Value (step 1, {label})", setting)
    expect(mapped_value(page, "Exit Date")).to_have_text("2027-06-10")
    expect(mapped_value(page, "Entry Date")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d$"))

    # the Mapped Values follow the example shown
    show_example(page, student_example["schoolmint_id"])
    b = student_example["answers"]
    expect(mapped_value(page, "First Name")).to_have_text(b["student_legal_first_name"])
    expect(mapped_value(page, "Gender")).to_have_text("M")
    expect(mapped_value(page, "Birth Date")).to_have_text(ymd(b["birth_date"]))
    show_example(page, str(example["form_id"]))
    expect(mapped_value(page, "First Name")).to_have_text(a["student_legal_first_name"])

    # Save, with its summary
    click(page, "button", "Save")
    expect(page.get_by_text("Saved the Export Student Mapping")).to_be_visible()
    expect(page.get_by_text("Every required SIS field is mapped.")).to_be_visible()
    expect(page.get_by_text("Unsaved changes")).to_have_count(0)

    # Send Record: preview exactly what will be exported, then OK, Continue
    click(page, "button", "Send Record")
    dialog = page.get_by_role("dialog", name="Send Record")
    expect(dialog).to_be_visible()
    preview = json.loads(dialog.get_by_test_id("payload").inner_text())
    assert preview["local_id"] == example["form_id"]
    assert preview["name"]["first_name"] == a["student_legal_first_name"]
    assert preview["demographics"] == {"gender": "F", "birth_date": ymd(a["birth_date"])}
    assert stack.sandbox_dump() == []  # nothing is sent before OK, Continue
    screenshot(page, "send-record-preview", at=dialog)
    problems = axe_check(page, "Send Record", include="#send-record")
    assert not problems, "\n".join(problems)
    dialog.get_by_role("button", name="OK, Continue").click()
    expect(dialog.get_by_test_id("send-status")).to_have_text("Succeeded")
    sis_id = dialog.get_by_test_id("send-sis-id").inner_text()
    assert sis_id
    assert page.evaluate("window.__marker") == "field mapping", "Send Record reloaded the page"

    # the student is in the SIS, as previewed
    stored = [s for s in stack.sandbox_dump() if str(s.get("local_id")) == str(example["form_id"])]
    assert len(stored) == 1, stack.sandbox_dump()
    assert stored[0]["name"]["first_name"] == a["student_legal_first_name"]
    assert stored[0]["demographics"]["birth_date"] == ymd(a["birth_date"])
    assert stored[0]["demographics"]["gender"] == "F"

    # History: the save is version 1, current; the test record says it was sent with it
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    follow(page, page.get_by_role("tab", name="History"))
    expect(page.get_by_test_id("version-1")).to_contain_text("Current")
    expect(page.get_by_test_id("version-1")).to_contain_text("added")
    page.goto(f"/registrations/{example['form_id']}")
    expect(page.get_by_test_id("mapping-version").first).to_have_text("mapping version 1")


def test_2_district_admin_assigns_the_connection_to_schools(new_page, stack):
    first, *others = ASSIGNED.values()
    page = new_page(ADMIN)
    go_to(page, "Schools/Programs")
    expect(page.get_by_role("heading", name="Manage Schools")).to_be_visible()

    # Edit a School > Primary tab: assign the API sync connection
    follow(page, page.get_by_role("link", name=f"Edit {first}"))
    expect(page.get_by_role("tab", name="Primary")).to_be_visible()
    page.get_by_label("API Sync Connection").select_option(label=f"{CONNECTION} (Sandbox)")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text(f"Saved {first}.")).to_be_visible()

    # Bulk Action > Set Sync Connection on two more schools, swapped in without a reload
    page.evaluate("window.__marker = 'same page'")
    for name in others:
        page.get_by_label(f"Select {name}").check()
    page.get_by_label("Sync connection for the selected schools").select_option(label=CONNECTION)
    page.get_by_role("button", name="Set Sync Connection").click()
    expect(page.get_by_text(f"2 school(s) now use {CONNECTION}")).to_be_visible()
    assert page.evaluate("window.__marker") == "same page", "the bulk action reloaded the page"
    rows = page.locator("#school-list tbody tr")
    for name in ASSIGNED.values():
        expect(rows.filter(has_text=name)).to_contain_text(CONNECTION)
    expect(rows.filter(has_text="Riverside High School")).not_to_contain_text(CONNECTION)
    screenshot(page, "manage-schools")
    problems = axe_check(page, "Manage Schools after a bulk action")
    assert not problems, "\n".join(problems)

    # the connection card lists its schools
    go_to(page, "Sync Service")
    expect(page.get_by_role("article", name=CONNECTION).get_by_test_id("schools")).to_have_text(
        ", ".join(sorted(ASSIGNED.values())))


def quick_filter(page, label: str, option: str):
    """A Quick Filter: the list is swapped in through HTMX (and the URL follows)."""
    filters = page.get_by_role("search", name="Quick Filters")
    with htmx_swap(page):
        filters.get_by_role("combobox", name=label, exact=True).select_option(label=option)


def sync_selected(page, will_sync: int):
    """Bulk Actions > Sync to SIS, check the plan, Proceed with Sync; returns the job page's id."""
    page.get_by_text("Bulk Actions").click()
    with htmx_swap(page):
        page.get_by_role("button", name="Sync to SIS").click()
    confirm = page.get_by_role("dialog", name="Sync to SIS")
    expect(confirm.get_by_test_id("will-sync")).to_contain_text(f"{will_sync} of ")
    expect(confirm).to_contain_text(f"{will_sync} through {CONNECTION} (Sandbox)")
    confirm.get_by_role("button", name="Proceed with Sync").click()
    page.wait_for_url(re.compile(r"/registrations/sync-jobs/\d+$"))
    return page.url


def watch_job(page, total: int):
    """The job page polls its progress component until the bar is full."""
    page.evaluate("window.__marker = 'job page'")
    progress = page.get_by_role("progressbar", name="Records done")
    expect(progress).to_have_attribute("aria-valuemax", str(total))
    expect(progress).to_have_attribute("aria-valuenow", str(total), timeout=60000)
    expect(page.get_by_test_id("job-status")).to_have_text("Completed")
    expect(page.get_by_test_id("job-percent")).to_have_text("100%")
    assert page.evaluate("window.__marker") == "job page", "the job page reloaded instead of polling"


def test_3_registrar_bulk_syncs_the_approved_registrations(new_page, stack):
    approved = approved_at_assigned_schools(stack)
    n_approved = len(stack.query("SELECT id FROM registration WHERE status = 'Approved'"))
    assert 0 < len(approved) < n_approved  # some Approved registrations are at schools without a connection
    stack.sandbox_faults(latency_ms=1200)  # slow enough to see the bar move, fast enough for CI
    page = new_page(REGISTRAR)

    # Registrations > Quick Filters: Approved > select all matching
    follow(page, page.get_by_role("navigation", name="Main").get_by_role("link", name="Registrations"))
    expect(page.get_by_role("heading", name="Registrations")).to_be_visible()
    quick_filter(page, "Status", "Approved")
    expect(page.get_by_test_id("match-count")).to_contain_text(f"{n_approved} registrations match this filter")
    page.get_by_label(f"Select all {n_approved} registrations matching this filter").check()
    for reg in approved[:3]:
        expect(page.get_by_role("row").filter(has_text=str(reg["form_id"])).get_by_role("checkbox")).to_be_checked()

    # Bulk Actions > Sync to SIS: the plan says who is skipped and why; Proceed with Sync
    page.get_by_text("Bulk Actions").click()
    with htmx_swap(page):
        page.get_by_role("button", name="Sync to SIS").click()
    confirm = page.get_by_role("dialog", name="Sync to SIS")
    expect(confirm.get_by_test_id("will-sync")).to_have_text(
        f"{len(approved)} of {n_approved} selected registrations will sync.")
    expect(confirm.get_by_test_id("skip-reasons")).to_contain_text(
        f"{n_approved - len(approved)} — The school has no sync connection.")

    # Dry run first: the counts appear in the confirmation, and nothing reaches the SIS
    in_sis = len(stack.sandbox_dump())
    with htmx_swap(page):
        confirm.get_by_role("button", name="Dry run").click()
    counts = confirm.get_by_test_id("dry-run-counts")
    expect(counts).to_be_visible()
    expect(confirm.get_by_test_id("dry-run-fail")).to_have_text("0")
    created = int(confirm.get_by_test_id("dry-run-create").inner_text().replace(",", ""))
    updated = int(confirm.get_by_test_id("dry-run-update").inner_text().replace(",", ""))
    assert created + updated == len(approved) and updated == in_sis  # the test record's student is known
    assert len(stack.sandbox_dump()) == in_sis, "a Dry run sent something to the SIS"

    confirm.get_by_role("button", name="Proceed with Sync").click()
    page.wait_for_url(re.compile(r"/registrations/sync-jobs/\d+$"))

    # the progress bar fills by polling, without a reload
    expect(page.get_by_test_id("job-total")).to_have_text(str(len(approved)))
    expect(page.get_by_test_id("job-status")).not_to_have_text("Completed")  # the sandbox is slow (latency_ms)
    screenshot(page, "bulk-sync-progress-running", at=page.get_by_role("heading", name=re.compile("Sync to SIS")))
    watch_job(page, len(approved))
    stack.sandbox_faults(latency_ms=0)
    expect(page.get_by_test_id("n-succeeded")).to_have_text(str(len(approved)))
    expect(page.get_by_test_id("n-failed")).to_have_text("0")
    records = page.get_by_role("region", name="Records")
    expect(records.get_by_role("row").filter(has_text="Succeeded")).to_have_count(len(approved))
    screenshot(page, "bulk-sync-progress", at=page.get_by_role("heading", name=re.compile("Sync to SIS")))

    # Registrations: each row's Sync Status
    follow(page, page.get_by_role("navigation", name="breadcrumb").get_by_role("link", name="Registrations"))
    quick_filter(page, "Status", "Approved")
    for reg in approved:
        expect(page.get_by_test_id(f"sync-status-{reg['form_id']}")).to_have_text("Succeeded")

    # and the students are in the SIS
    in_sis = {str(s.get("local_id")): s for s in stack.sandbox_dump()}
    for reg in approved:
        student = in_sis.get(str(reg["form_id"]))
        assert student is not None, f"registration {reg['form_id']} is not in the SIS"
        assert student["name"]["last_name"] == reg["answers"]["student_legal_last_name"]


def test_4_viewer_cannot_sync(new_page, stack):
    page = new_page(VIEWER)
    follow(page, page.get_by_role("navigation", name="Main").get_by_role("link", name="Registrations"))
    quick_filter(page, "Status", "Approved")
    expect(page.get_by_role("row").nth(1)).to_be_visible()
    expect(page.get_by_text("Bulk Actions")).to_have_count(0)
    expect(page.get_by_role("button", name="Sync to SIS")).to_have_count(0)
    expect(page.get_by_role("checkbox")).to_have_count(0)
    # Settings holds only what View Registrations reads: Sync Logs
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_text("Settings", exact=True).click()
    expect(nav.get_by_role("link", name="Sync Logs")).to_be_visible()
    for other in ("Sync Service", "Schools/Programs", "Users", "District"):
        expect(nav.get_by_role("link", name=other, exact=True)).to_have_count(0)
    page.keyboard.press("Escape")

    # posting Sync to SIS directly, with a valid CSRF token from the page, is refused
    n_jobs = len(stack.query("SELECT id FROM syncjob"))
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    reg_id = stack.query("SELECT id FROM registration WHERE status = 'Approved' LIMIT 1")[0]["id"]
    refused = []
    for path in ("/registrations/sync/confirm", "/registrations/sync"):
        r = page.request.post(path, form={"csrf_token": token, "registration_ids": str(reg_id),
                                          "all_matching": "1", "status": "Approved"},
                              headers={"X-CSRFToken": token, "HX-Request": "true"})
        assert r.status == 403, (path, r.status, r.text()[:500])
        refused.append(path)
    # the refusals were the point: they are not problems of the page
    new_page.problems[:] = [p for p in new_page.problems if not any(
        p.startswith("HTTP 403") and p.endswith(path) for path in refused)]
    assert len(stack.query("SELECT id FROM syncjob")) == n_jobs, "a Viewer started a sync job"


def test_5_a_rejected_student_is_fixed_in_the_mapping_and_retried(new_page, stack):
    rejected = [r for r in approved_at_assigned_schools(stack)
                if r["answers"]["student_legal_last_name"] == REJECTED_LAST_NAME]
    assert len(rejected) == 1, "the demo data should have one Approved O'Brien at an assigned school"
    rejected = rejected[0]
    school = ASSIGNED[rejected["school_number"]]
    at_school = [r for r in approved_at_assigned_schools(stack) if r["school_number"] == rejected["school_number"]]
    # the district's SIS gets a validation rule: no apostrophes in last names
    stack.sandbox_faults(reject_last_names=[REJECTED_LAST_NAME])

    # the Registrar syncs the school's Approved registrations; one fails
    registrar = new_page(REGISTRAR)
    follow(registrar, registrar.get_by_role("navigation", name="Main").get_by_role("link", name="Registrations"))
    quick_filter(registrar, "Status", "Approved")
    quick_filter(registrar, "School", school)
    expect(registrar.get_by_test_id("match-count")).to_contain_text(f"{len(at_school)} registration")
    registrar.get_by_label("Select all on this page").check()
    job_url = sync_selected(registrar, len(at_school))
    watch_job(registrar, len(at_school))
    expect(registrar.get_by_test_id("n-failed")).to_have_text("1")
    expect(registrar.get_by_test_id("n-succeeded")).to_have_text(str(len(at_school) - 1))
    expect(registrar.get_by_role("button", name="Retry failed (1)")).to_be_visible()
    job_id = job_url.rsplit("/", 1)[1]

    # the Sync Admin finds the reason in Settings > Sync Service > Sync Logs
    admin = new_page(SYNC_ADMIN)
    go_to(admin, "Sync Logs")
    expect(admin.get_by_role("heading", name="Sync Logs")).to_be_visible()
    expect(admin.get_by_test_id(f"count-{job_id}-failed")).to_have_text("1")
    follow(admin, admin.get_by_role("link", name=f"Bulk #{job_id}"))
    with htmx_swap(admin):
        admin.get_by_role("link", name="Failed (1)").click()
    failed_row = admin.get_by_role("region", name="Records").get_by_role("row").filter(
        has_text=str(rejected["form_id"]))
    expect(failed_row).to_contain_text("Failed")
    expect(failed_row).to_contain_text("Rejected by a district validation rule")
    expect(admin.get_by_role("region", name="Records").get_by_role("row")).to_have_count(2)  # header + 1
    screenshot(admin, "sync-logs-failure", at=admin.get_by_role("heading", name=re.compile("Sync to SIS")))

    # ... and fixes the mapping: Last Name drops apostrophes (a Substitute step)
    go_to(admin, "Sync Service")
    follow(admin, admin.get_by_role("article", name=CONNECTION).get_by_role("button", name="Configure Mapping"))
    follow(admin, admin.get_by_role("link", name="Export Student Mapping"))
    follow(admin, admin.get_by_role("tab", name="Field Mapping"))
    admin.evaluate("window.__marker = 'field mapping'")
    choose(admin, "Mapping Type for Last Name", "transformation")
    expect(admin.get_by_label("From Enroll Field for Last Name", exact=True)).to_have_value("student_legal_last_name")
    admin.get_by_label("Step to add (Last Name)").select_option(label="Substitute")
    click(admin, "button", "Add step (Last Name)")
    admin.get_by_role("textbox", name="Find (step 1, Last Name)").fill("'")
    with htmx_swap(admin):
        admin.get_by_role("textbox", name="Find (step 1, Last Name)").press("Tab")
    last_name_row = admin.locator("tbody.mapping-row").filter(has=admin.get_by_label("Mapping Type for Last Name"))
    expect(last_name_row.get_by_test_id("step-error")).to_have_count(0)
    click(admin, "button", "Save")
    expect(admin.get_by_text("Saved the Export Student Mapping")).to_be_visible()
    expect(admin.get_by_text("Every required SIS field is mapped.")).to_be_visible()
    assert admin.evaluate("window.__marker") == "field mapping"

    # the Registrar retries the failed record: it succeeds, sent as the mapping now says
    registrar.goto(job_url)
    registrar.get_by_role("button", name="Retry failed (1)").click()
    expect(registrar.get_by_text(f"Retrying 1 failed record(s) of job #{job_id}.")).to_be_visible()
    assert registrar.url != job_url
    watch_job(registrar, 1)
    expect(registrar.get_by_test_id("n-succeeded")).to_have_text("1")
    expect(registrar.get_by_test_id("n-failed")).to_have_text("0")
    expect(registrar.get_by_role("region", name="Records")).to_contain_text(str(rejected["form_id"]))
    stored = [s for s in stack.sandbox_dump() if str(s.get("local_id")) == str(rejected["form_id"])]
    assert len(stored) == 1 and stored[0]["name"]["last_name"] == REJECTED_LAST_NAME.replace("'", "")

    # the Sync Logs show both jobs
    go_to(admin, "Sync Logs")
    retry_row = admin.get_by_role("row").filter(has_text=f"Retry failed of #{job_id}")
    expect(retry_row).to_have_count(1)
    expect(retry_row).to_contain_text("Completed")
    screenshot(admin, "sync-logs", at=admin.get_by_role("heading", name="Sync Logs"))
    stack.sandbox_faults(reject_last_names=[])


def test_6_unticking_a_row_clears_select_all_matching(new_page, stack):
    """"Select all N matching" must not stay on once the registrar leaves one out: the
    sync would otherwise include the student they just unticked."""
    n_approved = len(stack.query("SELECT id FROM registration WHERE status = 'Approved'"))
    page = new_page(REGISTRAR)
    follow(page, page.get_by_role("navigation", name="Main").get_by_role("link", name="Registrations"))
    quick_filter(page, "Status", "Approved")
    everything = page.get_by_label(f"Select all {n_approved} registrations matching this filter")
    on_page = page.get_by_label("Select all on this page")
    everything.check()
    rows = page.get_by_role("row").get_by_role("checkbox", name=re.compile(r"^Select (?!all)"))
    expect(rows.first).to_be_checked()
    rows.first.uncheck()
    expect(everything).not_to_be_checked()
    expect(on_page).not_to_be_checked()
    expect(rows.nth(1)).to_be_checked()


def returning_student(stack) -> dict:
    """A student of an assigned school whom Enroll has not synced: last year's student the
    SIS already holds (born MM/DD/YYYY, a name as typed)."""
    rows = stack.query(
        "SELECT r.form_id, r.answers, s.school_number FROM registration r JOIN school s ON s.id = r.school_id "
        "WHERE r.status = 'Submitted' AND s.school_number IN ('101', '201') AND r.student_id NOT IN "
        "(SELECT student_id FROM sislink) ORDER BY r.form_id")
    for r in rows:
        a = json.loads(r["answers"])
        if re.fullmatch(r"\d\d/\d\d/\d{4}", a.get("birth_date") or "") and a["student_legal_last_name"].strip():
            return dict(form_id=r["form_id"], answers=a, school_number=r["school_number"])
    raise AssertionError("no unsynced student to play the returning student")


def put_in_sis(stack, student: dict) -> str:
    """The student as PowerSchool has held them since last year (its own API)."""
    import httpx
    a = student["answers"]
    token = httpx.post(stack.sandbox_url + "/oauth/access_token", data={"grant_type": "client_credentials"},
                       auth=(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)).json()["access_token"]
    body = {"students": {"student": [{
        "client_uid": "returning", "action": "INSERT", "local_id": 880001,
        "name": {"first_name": a["student_legal_first_name"].strip(), "last_name": a["student_legal_last_name"].strip()},
        "demographics": {"birth_date": ymd(a["birth_date"])},
        "addresses": {"physical": {"street": "77 Returning Rd", "city": "Old Town", "state_province": "CA",
                                   "postal_code": "92501"}},
        "school_enrollment": {"school_number": int(SCHOOL_CODES[student["school_number"]]),
                              "grade_level": 7 if student["school_number"] == "201" else 3,
                              "entry_date": "2025-08-20", "exit_date": "2026-06-10", "enroll_status": "A"}}]}}
    r = httpx.post(stack.sandbox_url + "/ws/v1/student", json=body, headers={"Authorization": f"Bearer {token}"})
    result = r.json()["results"]["result"]
    assert result["status"] == "SUCCESS", result
    return str(result["success_message"]["id"])


def test_7_sync_admin_imports_from_the_sis_and_a_returning_student_is_linked(new_page, stack):
    student = returning_student(stack)
    dcid = put_in_sis(stack, student)
    a = student["answers"]
    page = new_page(SYNC_ADMIN)

    # Configure Mapping > Import Student Mapping > Configure: a Student Example read from the SIS
    go_to(page, "Sync Service")
    card = page.get_by_role("article", name=CONNECTION)
    follow(page, card.get_by_role("button", name="Configure Mapping"))
    follow(page, page.get_by_role("link", name="Import Student Mapping"))
    page.get_by_label("Student Example 1").fill(dcid)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved the examples.")).to_be_visible()
    expect(page.get_by_test_id("examples")).to_contain_text(f"SIS ID {dcid}")
    follow(page, page.get_by_role("tab", name="Field Mapping"))
    expect(page.get_by_role("columnheader", name="From SIS Field").first).to_be_visible()
    page.evaluate("window.__marker = 'import mapping'")

    # From = SIS fields, To = Enroll's; the engine runs the other way
    choose(page, "Mapping Type for Student Legal First Name", "direct")
    type_in(page, "From SIS Field for Student Legal First Name", "name.first_name")
    expect(mapped_value(page, "Student Legal First Name")).to_have_text(a["student_legal_first_name"].strip())
    choose(page, "Mapping Type for Student Legal Last Name", "direct")
    type_in(page, "From SIS Field for Student Legal Last Name", "name.last_name")
    choose(page, "Mapping Type for Birth Date", "transformation")
    type_in(page, "From SIS Field for Birth Date", "demographics.birth_date")
    page.get_by_label("Step to add (Birth Date)").select_option(label="Date")
    click(page, "button", "Add step (Birth Date)")
    choose(page, "Stored as (step 1, Birth Date)", "YYYY-MM-DD")
    choose(page, "Send as (step 1, Birth Date)", "MM/DD/YYYY")
    expect(mapped_value(page, "Birth Date")).to_have_text(a["birth_date"])
    # one Overwrite row: a blank SIS city would clear Enroll's
    open_section(page, "Address")
    choose(page, "Mapping Type for Home City", "direct")
    type_in(page, "From SIS Field for Home City", "addresses.physical.city")
    expect(mapped_value(page, "Home City")).to_have_text("Old Town")
    overwrite = page.get_by_label("Overwrite for Home City", exact=True)
    expect(overwrite).to_be_enabled()
    with htmx_swap(page):
        overwrite.check()
    expect(page.get_by_label("Overwrite for Home City", exact=True)).to_be_checked()
    # only the students of this connection's schools: the SIS's school numbers as Enroll's
    open_section(page, "Enroll student record")
    choose(page, "Mapping Type for School Number", "match_codes")
    type_in(page, "From SIS Field for School Number", "school_enrollment.school_number")
    choose(page, "SIS code for 100 (School Number)", "101")
    choose(page, "SIS code for 200 (School Number)", "201")
    choose(page, "An answer without a code (School Number)", "blank")
    expect(mapped_value(page, "School Number")).to_have_text(student["school_number"])
    assert page.evaluate("window.__marker") == "import mapping", "a Field Mapping change reloaded the page"
    click(page, "button", "Save")
    expect(page.get_by_text("Saved the Import Student Mapping")).to_be_visible()
    expect(page.get_by_label("Overwrite for Home City", exact=True)).to_be_checked()
    screenshot(page, "import-mapping", at=page.locator("details.mapping-section", has_text="Address"))

    # Import from SIS: the preview first, nothing written
    follow(page, page.get_by_role("button", name="Import from SIS"))
    follow(page, page.get_by_role("button", name="Preview import"))
    expect(page.get_by_test_id("run-import")).to_be_visible(timeout=60000)
    expect(page.get_by_test_id("job-status")).to_have_text("Completed")
    expect(page.get_by_test_id("n-failed")).to_have_text("0")
    returning_row = page.get_by_test_id(f"import-item-{dcid}")
    expect(returning_row).to_contain_text("would be linked to SIS student")
    expect(returning_row).to_contain_text("name and birth date")
    expect(page.get_by_test_id("preview-sample")).to_be_visible()
    screenshot(page, "import-preview", full_page=True)
    assert not stack.query("SELECT id FROM sislink WHERE sis_id = ?", dcid), "a preview linked a student"

    # Run import, from the preview
    follow(page, page.get_by_test_id("run-import"))
    expect(page.get_by_test_id("job-status")).to_have_text("Completed", timeout=60000)
    expect(page.get_by_test_id(f"import-item-{dcid}")).to_contain_text("Updated")

    # the returning student's registration: linked, with the SIS's values beside the answers
    page.goto(f"/registrations/{student['form_id']}")
    expect(page.get_by_test_id("linked-sis-student")).to_have_text(f"Linked to SIS student {dcid}")
    expect(page.get_by_test_id("sis-links")).to_contain_text("imported")
    screenshot(page, "returning-student", at=page.get_by_test_id("returning-student"))
