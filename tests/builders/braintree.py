"""Builders of realistic Braintree webhooks for tests, benchmarks and the e2e test.

Shapes follow braintree_python's ``webhook_testing_gateway.py`` and the transaction and
subscription response objects (reference/webhooks.md §3.3): XML with dashed tags, typed
leaves, ``type="array"`` lists. Signing follows §2.3. Card data is only ever brand, last 4,
expiry, BIN and Braintree's fingerprint: never a card number. Pure: fixed defaults.
"""

from __future__ import annotations

import base64
from urllib.parse import urlencode
from xml.sax.saxutils import escape

from paywatch.providers.braintree.signature import sign_payload

PUBLIC_KEY = "dev_bt_public_8m4k"
PRIVATE_KEY = "dev_bt_private_5c1f9e0a7b3d2e6f"
TIMESTAMP = "2026-06-15T09:30:12Z"
SUBSCRIPTION_ID = "bt_sub_7hq2k9"
TRANSACTION_ID = "bt_txn_k3w8p1"
CUSTOMER_ID = "bt_cus_49210877"
PLAN_ID = "pro-monthly"
PERIOD_START = "2026-06-15"
PERIOD_END = "2026-07-14"
CARD_FINGERPRINT = "6e1b2a1a0d5c4f8e9b7d3c2a1f0e9d8c"


def _leaf(tag: str, value: str | int | None, kind: str | None = None) -> str:
    if value is None:
        return f'<{tag} nil="true"/>'
    typed = f' type="{kind}"' if kind else ""
    return f"<{tag}{typed}>{escape(str(value))}</{tag}>"


def braintree_transaction_xml(
    *,
    transaction_id: str = TRANSACTION_ID,
    status: str = "processor_declined",
    amount: str = "49.00",
    currency: str = "USD",
    subscription_id: str | None = SUBSCRIPTION_ID,
    period_start: str = PERIOD_START,
    customer_id: str = CUSTOMER_ID,
    response_code: str | None = "2001",
    response_text: str | None = "Insufficient Funds",
    response_type: str | None = "soft_declined",
    gateway_rejection_reason: str | None = None,
    network_response_code: str | None = "51",
    merchant_advice_code: str | None = None,
    card_type: str = "Visa",
    last4: str = "1111",
) -> str:
    """A ``<transaction>`` as Braintree serializes it (a declined card charge by default)."""
    return "".join(
        [
            "<transaction>",
            _leaf("id", transaction_id),
            _leaf("status", status),
            _leaf("type", "sale"),
            _leaf("amount", amount),
            _leaf("currency-iso-code", currency),
            _leaf("recurring", "true", "boolean"),
            _leaf("subscription-id", subscription_id),
            _leaf("plan-id", PLAN_ID if subscription_id else None),
            _leaf("processor-response-code", response_code),
            _leaf("processor-response-text", response_text),
            _leaf("processor-response-type", response_type),
            _leaf("gateway-rejection-reason", gateway_rejection_reason),
            _leaf("network-response-code", network_response_code),
            _leaf("merchant-advice-code", merchant_advice_code),
            "<customer>",
            _leaf("id", customer_id),
            _leaf("email", "billing@example.com"),
            "</customer>",
            "<credit-card>",
            _leaf("token", "bt_pm_2x9c"),
            _leaf("bin", "411111"),
            _leaf("last-4", last4),
            _leaf("card-type", card_type),
            _leaf("expiration-month", "08"),
            _leaf("expiration-year", "2029"),
            _leaf("masked-number", f"411111******{last4}"),
            _leaf("unique-number-identifier", CARD_FINGERPRINT),
            "</credit-card>",
            "<subscription>",
            _leaf("billing-period-start-date", period_start, "date"),
            _leaf("billing-period-end-date", PERIOD_END, "date"),
            "</subscription>",
            _leaf("created-at", TIMESTAMP, "datetime"),
            "</transaction>",
        ]
    )


def braintree_subscription_xml(
    *,
    subscription_id: str = SUBSCRIPTION_ID,
    status: str = "Past Due",
    failure_count: int = 1,
    next_billing_date: str = "2026-06-20",
    period_start: str = PERIOD_START,
    transactions: list[str] | None = None,
) -> str:
    """A ``<subscription>`` with its transactions (latest first)."""
    return "".join(
        [
            "<subscription>",
            _leaf("id", subscription_id),
            _leaf("status", status),
            _leaf("plan-id", PLAN_ID),
            _leaf("price", "49.00"),
            _leaf("balance", "49.00" if status == "Past Due" else "0.00"),
            _leaf("failure-count", failure_count, "integer"),
            _leaf("days-past-due", 0 if status != "Past Due" else 1, "integer"),
            _leaf("current-billing-cycle", 4, "integer"),
            _leaf("billing-period-start-date", period_start, "date"),
            _leaf("billing-period-end-date", PERIOD_END, "date"),
            _leaf("next-billing-date", next_billing_date, "date"),
            _leaf("payment-method-token", "bt_pm_2x9c"),
            '<transactions type="array">',
            *(transactions if transactions is not None else [braintree_transaction_xml()]),
            "</transactions>",
            '<add-ons type="array"/><discounts type="array"/>',
            "</subscription>",
        ]
    )


def braintree_notification_xml(kind: str, subject: str, *, timestamp: str = TIMESTAMP) -> str:
    """The ``<notification>`` envelope around a subject element."""
    return (
        "<notification>"
        f'<timestamp type="datetime">{escape(timestamp)}</timestamp>'
        f"<kind>{escape(kind)}</kind>"
        f"<subject>{subject}</subject>"
        "</notification>"
    )


def braintree_failure(
    *, timestamp: str = TIMESTAMP, transaction: str | None = None, failure_count: int = 1
) -> str:
    """``subscription_charged_unsuccessfully`` XML (insufficient funds on a Visa by default).

    ``transaction`` is a ``braintree_transaction_xml(...)`` to vary the decline.
    """
    txn = transaction if transaction is not None else braintree_transaction_xml()
    sub = braintree_subscription_xml(failure_count=failure_count, transactions=[txn])
    return braintree_notification_xml(
        "subscription_charged_unsuccessfully", sub, timestamp=timestamp
    )


def braintree_recovery(*, timestamp: str = "2026-06-20T09:31:02Z") -> str:
    """``subscription_charged_successfully`` XML for the same billing cycle as the failure."""
    txn = braintree_transaction_xml(
        transaction_id="bt_txn_r5t7y2",
        status="submitted_for_settlement",
        response_code="1000",
        response_text="Approved",
        response_type="approved",
        network_response_code="00",
    )
    sub = braintree_subscription_xml(
        status="Active", failure_count=0, next_billing_date="2026-07-15", transactions=[txn]
    )
    return braintree_notification_xml("subscription_charged_successfully", sub, timestamp=timestamp)


def braintree_payload(xml: str) -> str:
    """``bt_payload``: MIME base64 of the XML, with newlines (``base64.encodebytes``)."""
    return base64.encodebytes(xml.encode("utf-8")).decode("ascii")


def sign_braintree(
    payload: str, public_key: str = PUBLIC_KEY, private_key: str = PRIVATE_KEY
) -> str:
    """``bt_signature`` for a ``bt_payload``: ``public_key|hex hmac-sha1``."""
    return f"{public_key}|{sign_payload(payload, private_key)}"


def braintree_form(signature: str, payload: str) -> bytes:
    """The form body Braintree POSTs."""
    return urlencode({"bt_signature": signature, "bt_payload": payload}).encode("ascii")


def braintree_body(xml: str, public_key: str = PUBLIC_KEY, private_key: str = PRIVATE_KEY) -> bytes:
    """A signed webhook body for ``xml`` (content type application/x-www-form-urlencoded)."""
    payload = braintree_payload(xml)
    return braintree_form(sign_braintree(payload, public_key, private_key), payload)


BRAINTREE_HEADERS = {"content-type": "application/x-www-form-urlencoded"}
"""Headers to send with ``braintree_body`` (the signature is in the form, not a header)."""
