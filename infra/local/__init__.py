"""Local Kafka, Redis and Flink processes started from the project's own files."""
