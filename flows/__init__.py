"""bytewax dataflows: Kafka in, per-customer and per-item state, Redis and Kafka out."""
