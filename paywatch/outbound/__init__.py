"""Outbound: what paywatch tells tenants' systems (issue 11), signed webhooks first.

* ``events`` (pure): the outbound event types and their JSON envelope.
"""
