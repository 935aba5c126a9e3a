"""Pulse command line (settings are in config/)."""
