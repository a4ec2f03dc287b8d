"""Outbound: what paywatch tells tenants' systems (issue 11).

* ``events`` (pure): the outbound event types and their JSON envelope.
* ``mapping`` (pure): a saga transition, recovery command or alert -> the event it causes.
* ``slack`` (pure): an event as a Slack incoming-webhook message.
* ``endpoints``: tenants' endpoints, their sealed secrets and the target (SSRF) rules.
* ``deliveries``: one delivery per subscribed endpoint and event, its attempts and log.
* ``producer``: the executor process's consumer turning records into deliveries.
* ``sender``: the executor process's Dispatcher, signing (Standard Webhooks) and sending.
"""
