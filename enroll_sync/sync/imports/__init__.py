"""Import: SIS students into Enroll (the other direction of a connection).

- ``fields``: the two sides of an Import Student Mapping (From: the SIS's fields; To:
  Enroll's form fields, SchoolMint ID and School Number);
- ``matching``: which Enroll student an SIS student is (link, SchoolMint ID, name +
  birth date), looked up a page at a time;
- ``rule``: what an import does with one SIS student (map, scope, match, merge with the
  Overwrite rule, decide): the preview and the import share it;
- ``jobs``: starting a preview or an import, Cancel, Resume, progress;
- ``runner``: what a worker does with an import job (page by page, resumable);
- ``schedule``: the daily scheduled import of each connection;
- ``profiles``: imported values kept per student, and pre-filling a returning
  student's registration.

See docs/importing.md.
"""
