"""``pulse``: the command line. Importing a command module registers its commands on :data:`app`."""

from __future__ import annotations

from pulse.app import app
from pulse.commands import (
    archive,
    covisit,
    demo,
    eval_bandit,
    eval_mf,
    experiments,
    exporter,
    job,
    lag,
    model,
    produce,
    serve,
    services,
)

__all__ = ["app", "archive", "covisit", "demo", "eval_bandit", "eval_mf", "experiments", "exporter", "job", "lag",
           "model", "produce", "serve", "services"]
