"""Records that end Failed although the SIS has them (the SIS saved the batch, then its
answer was lost) are settled by looking up, not by inserting again: Retry failed and
the next sync send them without a SIS link, so the adapter's match-before-insert finds
the students the SIS already has. End to end: PowerSchool sandbox, web, worker."""
from __future__ import annotations

from enroll_sync.models import Registration, SisLink, SyncConnection
from enroll_sync.testing import db, run_worker, sign_in, wait_for_job
from tests.test_sync_support import connect_to_sandbox, local_ids, sandbox  # noqa: F401


def _approved(app, conn_id, n, skip=0):
    with db(app):
        schools = [s.id for s in SyncConnection.get_by_id(conn_id).schools]
        regs = list(Registration.select().where((Registration.status == "Approved")
                                                & Registration.school.in_(schools))
                    .order_by(Registration.id).offset(skip).limit(n))
        return [r.id for r in regs], {str(r.form_id): r.student_id for r in regs}


def _links(app, conn_id, students):
    with db(app):
        return {s.student_id: (s.sis_id, s.how) for s in
                SisLink.select().where(SisLink.student.in_(list(students)) & (SisLink.connection == conn_id))}


def _start(session, ids):
    r = session.post_form("/registrations/sync", {"registration_ids": [str(i) for i in ids]})
    assert r.status_code == 302, r.text[:300]
    return int(r.headers["location"].rstrip("/").rsplit("/", 1)[-1])


def test_retry_failed_and_the_next_sync_match_what_the_sis_saved(app, live, sandbox):  # noqa: F811
    conn_id = connect_to_sandbox(app, sandbox)
    registrar = sign_in(live.url, "Registrar")
    registrar.page("/registrations/")
    for how in ("Retry failed", "the next sync"):
        ids, students = _approved(app, conn_id, 3, skip=0 if how == "Retry failed" else 3)
        before = sandbox.count()
        # the SIS saves what it is sent, then answers 500, every time: the records may have
        # been saved, and the job ends with them Failed
        sandbox.set_faults(lost_answers=50)
        with run_worker(app):
            first = wait_for_job(app, _start(registrar, ids))
            sandbox.set_faults(lost_answers=0)
            assert {i.status for i in first.items} == {"Failed"}, (how, first.items)
            assert sandbox.count() == before + 3, "the SIS kept the students it was sent"
            assert not _links(app, conn_id, students.values()), "no link is known after a lost answer"
            if how == "Retry failed":
                r = registrar.post_form(f"/registrations/sync-jobs/{first.id}/retry", {})
                assert r.status_code == 302
                again_id = int(r.headers["location"].rstrip("/").rsplit("/", 1)[-1])
            else:
                again_id = _start(registrar, ids)
            again = wait_for_job(app, again_id)
        assert {i.status for i in again.items} == {"Succeeded"}, (how, again.items)
        assert sandbox.count() == before + 3, f"{how} inserted the students a second time"
        dcids = {str(s["local_id"]): str(s["id"]) for s in sandbox.dump() if str(s["local_id"]) in students}
        links = _links(app, conn_id, students.values())
        assert {students[fid]: (dcid, "matched") for fid, dcid in dcids.items()} == links, (how, links)
        assert all("matched" in (i.reason or "").lower() for i in again.items), [i.reason for i in again.items]
    registrar.close()
