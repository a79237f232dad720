"""Enroll Sync adapter for any JSON REST SIS described by OpenAPI / Swagger or JSON Schema."""
from .adapter import GenericRestAdapter

__all__ = ["GenericRestAdapter"]
__version__ = GenericRestAdapter.version
