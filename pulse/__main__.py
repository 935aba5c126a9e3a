"""``python -m pulse`` is the ``pulse`` command."""

from pulse.cli import app

app(prog_name="pulse")
