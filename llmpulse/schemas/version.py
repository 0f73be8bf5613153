"""The version of the trace event contract, in one place.

Kept apart from :mod:`llmpulse.schemas.event` so that the client library can
stamp events without building the pydantic model (a fifth of a second).
"""

from typing import Final

SCHEMA_VERSION: Final = 1
"""The ``schema_version`` every trace event carries."""

__all__ = ["SCHEMA_VERSION"]
