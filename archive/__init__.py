"""The event archive: every record of the events topic as Parquet, one folder per event hour, exactly once.

``layout.py`` the folders, file names and row layout; ``digest.py`` the count and digest of an
hour's events; ``files.py`` durable writes and reads of the files; ``archiver.py`` the Kafka
consumer that writes them (``pulse archive run``); ``replay.py`` archived events back to a topic in
event-time order (``pulse backfill``). README "Archive and backfill".
"""
