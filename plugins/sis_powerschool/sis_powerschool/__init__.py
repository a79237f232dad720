"""Enroll Sync SIS adapter for PowerSchool, with a PowerSchool-compatible sandbox."""
from .adapter import PowerSchoolAdapter

__all__ = ["PowerSchoolAdapter"]
__version__ = "0.1.0"
