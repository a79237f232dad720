"""Enroll Sync SIS adapter for Aeries, with an Aeries-compatible sandbox."""
__version__ = "0.1.0"
