"""The sandbox executor (`paywatch run executor`): carries out recovery commands.

* ``simulator`` (pure): does a retried payment succeed? Seeded by command id.
* ``outcome`` (pure): the PaymentEvent a retry appends to payments.events.
* ``schedule`` (pure): commands waiting for their ``due_at``; offsets safe to commit.
* ``journal``: the ``executed_commands`` table, the durable idempotency guard.
* ``runner``: the aiokafka loop gluing them together; ``metrics``: its counters.

Errors are those of :mod:`paywatch.errors`: ConfigError for a bad simulator table,
CodecError for undecodable commands (dead-lettered); Kafka and Postgres errors end
the process, which resumes from its committed offsets.
"""
