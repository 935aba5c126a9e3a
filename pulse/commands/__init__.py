"""Subcommands of ``pulse``; importing a module registers its commands."""
