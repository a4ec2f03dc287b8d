"""Kafka client plumbing shared by every shell: client configs, the acks=all appender,
topic administration and the codec factory (single-object or schema registry)."""
