"""The HTTP serving shim over Redis (reads) and Kafka (impressions, collected events).

``create_app(settings)`` builds the FastAPI app; ``pulse serve`` runs it. ADR: docs/adr/0004-serving.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # The app (FastAPI, the console, the bandits' SciPy) is imported when asked for, not with the
    # package: every `pulse` command that reads Redis through serving.sync_reads would pay ~0.5 s.
    if name == "create_app":
        from serving.app import create_app

        return create_app
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
