"""Configuration: the one typed settings object every part of Pulse is given.

The bottom of the package order (docs/ARCHITECTURE.md): it imports nothing of Pulse's own.
"""

from config.settings import (
    REPO_ROOT,
    BanditScopeName,
    ConflictingPasswordsError,
    Settings,
    split_redis_password,
)

__all__ = ["REPO_ROOT", "BanditScopeName", "ConflictingPasswordsError", "Settings", "split_redis_password"]
