"""Kafka -> Postgres read models. One module per read model (pure), one sink, one runner."""
