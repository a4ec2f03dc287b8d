"""Outbound webhooks, the pure parts: target URLs and addresses, event types, secrets,
signatures (verified by the official standardwebhooks library) and the retry schedule."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from paywatch.errors import ConfigError
from paywatch.outbound.deliveries import RETRY_DELAYS_S, body_bytes, retry_delay
from paywatch.outbound.endpoints import (
    URL_PATTERN,
    TargetPolicy,
    TargetRefused,
    address_refusal,
    check_url,
    new_secret,
    parse_events,
    shown_url,
)
from paywatch.outbound.events import EVENT_TYPES, OutboundEvent, event_id
from paywatch.outbound.sender import signature
from paywatch.settings import Settings

DEV = TargetPolicy(require_https=False, refuse_private=False)
PROD = TargetPolicy(require_https=True, refuse_private=True)
PROD_KEY = "k" * 40


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("http://127.0.0.1:8080/hook?x=1", "127.0.0.1", 8080),
        ("https://hooks.slack.com/services/T0/B0/xyz", "hooks.slack.com", 443),
        ("http://receiver.example/in", "receiver.example", 80),
        ("https://a.b:65535", "a.b", 65535),
    ],
)
def test_target_urls_give_their_host_and_port(url: str, host: str, port: int) -> None:
    assert check_url(url, DEV) == (host, port)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://a.example/x",
        "http://a.example/#frag",
        "http://a b.example/",
        "http://a.example/\n",
        "http://user:pw@a.example/",
        "http://a.example:0/",
        "http://a.example:65536/",
        "http://[::1]/",
        "http://-a.example/",
        "https://" + "a" * 64 + ".example/",
        "http://a.example/" + "x" * 2048,
        "http://ä.example/",
    ],
)
def test_what_is_not_a_target_url_is_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_url(url, DEV)


def test_prod_wants_https() -> None:
    with pytest.raises(TargetRefused, match="https"):
        check_url("http://receiver.example/in", PROD)
    assert check_url("https://receiver.example/in", PROD) == ("receiver.example", 443)


@given(st.from_regex(URL_PATTERN, fullmatch=True))
def test_every_url_the_api_schema_allows_is_accepted(url: str) -> None:
    """The API publishes URL_PATTERN: what a client may send by it is never refused in dev."""
    if len(url) <= 2048:
        check_url(url, DEV)


def test_the_policy_follows_the_settings() -> None:
    assert TargetPolicy.from_settings(Settings()) == DEV
    prod = Settings(env="prod", secret_key=PROD_KEY)
    assert TargetPolicy.from_settings(prod) == PROD
    allowed = Settings(env="prod", secret_key=PROD_KEY, outbound_allow_private=True)
    assert TargetPolicy.from_settings(allowed) == TargetPolicy(True, False)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not globally routable"),
        ("::1", "loopback"),
        ("fe80::1%eth0", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:10.0.0.1", "private"),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_addresses_are_judged_by_what_they_reach(address: str, why: str | None) -> None:
    assert address_refusal(address) == why


def test_event_types_are_checked_and_kept_in_their_order() -> None:
    assert parse_events(["invoice.recovered", "alert.opened", " invoice.recovered "]) == (
        "invoice.recovered",
        "alert.opened",
    )
    with pytest.raises(ConfigError, match=r"unknown event type\(s\) invoice\.paid"):
        parse_events(["invoice.paid", "alert.opened"])
    with pytest.raises(ConfigError, match="at least one"):
        parse_events(["", " "])
    assert parse_events(EVENT_TYPES) == EVENT_TYPES


def test_a_secret_is_whsec_and_32_random_bytes() -> None:
    secret = new_secret()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert new_secret() != secret


def test_a_slack_url_is_listed_as_its_origin_only() -> None:
    url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
    assert shown_url(url, "slack") == "https://hooks.slack.com/…"
    assert shown_url("https://a.example/x", "webhook") == "https://a.example/x"


def _event() -> OutboundEvent:
    return OutboundEvent(
        id=event_id("command:cmd-1"),
        type="recovery.retry_due",
        tenant="acme",
        created_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        data={"invoice_ref": "in_1", "note": "é"},
    )


def test_both_secrets_of_a_rotation_verify_and_a_third_does_not() -> None:
    old, new = new_secret(), new_secret()
    body = body_bytes(_event().envelope())
    now = datetime.now(UTC)
    headers = {
        "webhook-id": _event().id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature([new, old], _event().id, now, body),
    }
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers)["data"]["note"] == "é"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body + b" ", headers)


def test_retries_come_after_1_5_30_120_minutes_scaled_then_none() -> None:
    assert RETRY_DELAYS_S == (60.0, 300.0, 1800.0, 7200.0)
    assert [retry_delay(n, 1.0) for n in range(1, 6)] == [60.0, 300.0, 1800.0, 7200.0, None]
    assert [retry_delay(n, 600.0) for n in range(1, 6)] == [0.1, 0.5, 3.0, 12.0, None]
