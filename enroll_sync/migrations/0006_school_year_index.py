"""An index on ``registration (organization_id, school_year)``: the School Year Quick
Filter lists the district's school years (``SELECT DISTINCT``) on every Registrations
page, which scanned every registration (21 ms of a 76 ms page at 10,000 registrations,
found by ``benchmarks/web_load.py``); with the index it reads the index alone."""


def up(db, migrator):
    names = {i.name for i in db.get_indexes("registration")}
    if "registration_organization_id_school_year" not in names:
        db.execute_sql('CREATE INDEX "registration_organization_id_school_year" '
                       'ON "registration" ("organization_id", "school_year")')
