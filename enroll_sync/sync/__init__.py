"""Bulk Sync to SIS: which registrations a sync covers, the jobs that send them, and
the huey queue those jobs run on.

- ``selection``: the Quick Filters of the Registrations list as a query, and a
  selection (a filter, or ids) that works the same for 5 and for 100,000 rows.
- ``jobs``: what "Sync to SIS" would do (the confirmation), creating a job in bulk,
  the batch runner (claim, map, export, record), progress, Retry failed, recovery.
- ``queue``: the huey instance of an app (SqliteHuey or RedisHuey from
  ``QUEUE_URL``), the in-process consumer of ``serve`` and ``enroll-sync worker``.

Data flows one way: web -> sync -> mapping / adapters. Nothing here imports Flask
views; the runner needs only an app for its config, plugins and secret key.
"""
