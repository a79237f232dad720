"""``python -m enroll_sync ...`` is the ``enroll-sync`` command (handy in a subprocess
where the console script may not be on PATH)."""
import sys

from .cli import main

sys.exit(main())
