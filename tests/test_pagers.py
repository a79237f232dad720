"""Long lists page through HTMX: Sync Logs (jobs, and a job's records)."""
from __future__ import annotations

import re

from enroll_sync.db import database
from enroll_sync.models import Registration, SyncItem, SyncJob


def test_sync_logs_and_job_records_page(app, live, login):
    with app.app_context(), database.connection_context():
        regs = list(Registration.select())
        org = regs[0].organization_id
        jobs = [SyncJob.create(organization=org, kind="bulk", status="Completed", total=0) for _ in range(30)]
        big = jobs[-1]
        SyncItem.insert_many([dict(job=big, registration=regs[i % len(regs)], status="Failed", reason=f"r{i}")
                              for i in range(60)]).execute()
    admin = login("Sync Admin")
    logs = admin.get("/settings/sync-logs/")
    assert "Page 1 of 2" in logs.text
    assert re.search(r'href="\?page=2" hx-get="\?page=2" hx-target="#sync-log-list"', logs.text)
    second = admin.get("/settings/sync-logs/?page=2", headers={"HX-Request": "true"})
    assert second.status_code == 200 and "Page 2 of 2" in second.text and "<html" not in second.text

    job = admin.get(f"/settings/sync-logs/{big.id}")
    assert "Page 1 of 2" in job.text
    m = re.search(r'<a href="([^"]*page=2[^"]*)" hx-get="[^"]*" hx-target="#job-items"', job.text)
    assert m, "no link to the second page of records"
    page2 = admin.get(m.group(1).replace("&amp;", "&"))
    assert page2.status_code == 200 and "Page 2 of 2" in page2.text and "r59" in page2.text
