"""Producers: the library that sends events to Kafka, and event sources."""
