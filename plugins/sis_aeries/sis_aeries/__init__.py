"""Enroll Sync SIS adapter for Aeries, with an Aeries-compatible sandbox."""
from .adapter import AeriesAdapter

__all__ = ["AeriesAdapter"]
__version__ = "0.1.0"
