"""Kafka -> Postgres read models: one module per read model behind one small base
(`base.ReadModel`), listed in `registry`; one sink writes a batch of them, one runner feeds it."""
