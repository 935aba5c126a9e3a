"""The PyFlink job: Kafka -> decode/DLQ -> per-user state + learners -> shared state -> Redis."""
