"""The archive: every record of the events and served-lists topics as Parquet, one folder per hour, exactly once.

``job.py`` the Flink SQL job that writes the files (``pulse archive run``), ``functions.py`` its
Python function and ``rows.py`` what that function makes of a record; ``layout.py`` the folders
and row layout; ``digest.py`` the count and digest of an hour's records; ``files.py`` the
committed files read back; ``verify.py`` archive vs topic; ``replay.py`` archived events back to a
topic in event-time order (``pulse backfill``). README "Archive and backfill", ADR 0011.
"""
