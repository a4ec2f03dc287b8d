"""The sandbox executor (`paywatch run executor`): carries out recovery commands in batches.

* ``simulator`` (pure): does a retried payment succeed? Seeded by command id.
* ``outcome`` (pure): the PaymentEvent a retry appends to payments.events.
* ``schedule`` (pure): commands waiting for their ``due_at``; offsets safe to commit.
* ``decide`` (pure): a batch of due commands -> journal entries and encoded outcomes
  (none for a retry a schedule-only tenant charges itself: journaled ``scheduled``).
* ``journal``: the ``executed_commands`` table, the durable idempotency guard.
* ``effects``: a batch journaled and its outcomes acked in one transaction.
* ``failures``: the record's fault (dead-letter it) or transient (retry); dead letters.
* ``letters``: the step's dead letters, sent and acked together.
* ``runner``: the aiokafka loop gluing them together; ``metrics``: its counters.

Errors are those of :mod:`paywatch.errors`: ConfigError for a bad simulator table,
CodecError for undecodable commands (dead-lettered). A command Postgres or Kafka refuses
is dead-lettered alone; Kafka or Postgres unavailable is retried with backoff.
"""
