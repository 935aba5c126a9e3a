"""The HTTP serving shim over Redis (reads) and Kafka (impressions, collected events).

``create_app(settings)`` builds the FastAPI app; ``pulse serve`` runs it. ADR: docs/adr/0004-serving.md.
"""

from serving.app import create_app

__all__ = ["create_app"]
