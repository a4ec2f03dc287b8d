"""A process never logs the URLs httpx requests (a Slack URL is a secret)."""

from __future__ import annotations

import logging

import httpx
import pytest

from paywatch.ops.cli import configure_logging

SLACK = "https://hooks.slack.com/services/T0000/B0000/XXXXsecretXXXX"


def test_request_urls_are_not_logged_by_a_process(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging()
    caplog.set_level(logging.INFO)  # the root: paywatch's own INFO lines still show
    for name in ("httpx", "httpcore"):
        assert logging.getLogger(name).level == logging.WARNING
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with httpx.Client(transport=transport) as client:
        client.post(SLACK, json={"text": "hi"})
    logging.getLogger("paywatch.outbound").info("sent one delivery")
    assert "sent one delivery" in caplog.text
    assert "secret" not in caplog.text and "hooks.slack.com" not in caplog.text
