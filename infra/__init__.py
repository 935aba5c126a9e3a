"""Infrastructure: how Pulse's services start (local processes, manifests, dashboards)."""
