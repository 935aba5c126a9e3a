"""Pulse command line and settings."""
