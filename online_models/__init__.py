"""Pure online learners over River: no Kafka, Redis or Flink. See ``online_models.base``."""
