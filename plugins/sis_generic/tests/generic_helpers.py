"""Record factories shared by the generic adapter's tests."""
from __future__ import annotations

import itertools

from enroll_sync import ExportRecord

_serial = itertools.count(1)

#: tiny retry waits keep the suite fast
FAST = {"retry_backoff": 0.01, "max_attempts": 3, "timeout": 5}

FEMALE = "uri://ed-fi.org/SexDescriptor#Female"
HOME = "uri://ed-fi.org/AddressTypeDescriptor#Home"
CA = "uri://ed-fi.org/StateAbbreviationDescriptor#CA"


def student(n: int | None = None, **fields) -> ExportRecord:
    """A valid Ed-Fi student record (flat dotted keys, as the mapping engine makes them)."""
    n = n if n is not None else next(_serial)
    payload = {
        "studentUniqueId": f"ES{n:06d}",
        "firstName": f"Ana{n}",
        "lastSurname": "Diaz",
        "birthDate": "2015-04-01",
        "sexDescriptor": FEMALE,
        "gradeLevel": "3",
        "addresses.0.addressTypeDescriptor": HOME,
        "addresses.0.streetNumberName": f"{n} Main St",
        "addresses.0.city": "Oakland",
        "addresses.0.stateAbbreviationDescriptor": CA,
        "addresses.0.postalCode": "94607",
    }
    payload.update(fields)
    return ExportRecord(record_id=f"reg-{n}", payload={k: v for k, v in payload.items() if v != "<drop>"})


def person(n: int | None = None, **fields) -> ExportRecord:
    n = n if n is not None else next(_serial)
    payload = {"externalId": f"P{n}", "givenName": f"Lee{n}", "familyName": "Park",
               "grade": "K", "contact.email": f"lee{n}@example.org"}
    payload.update(fields)
    return ExportRecord(record_id=f"person-{n}", payload=payload)
