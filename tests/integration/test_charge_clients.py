"""The five live charge clients over real sockets against tests/fake_providers.py.

No Kafka or Postgres: each test starts the fake HTTP server in its event loop. Per provider:
a paid retry, a decline whose code classifies as that provider's webhooks classify it,
Rejected and Unavailable answers, the idempotency key on the wire, and "the same command
charges once" -- through the provider's key (Stripe, Adyen, Checkout.com) or the client's
resumed lookup (Braintree, Authorize.Net, where the test also shows that without the
lookup the provider would charge again). No credential may appear in an error or a log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from paywatch.charging.base import ChargeClient, ChargeError, ChargeRequest, Rejected, Unavailable
from paywatch.charging.registry import CREDENTIALS, LIVE_PROVIDERS, client_for
from paywatch.providers.adyen.declines import REFUSAL_REASONS
from paywatch.providers.authorizenet.declines import explain as authorizenet_explain
from paywatch.providers.braintree.declines import Facts
from paywatch.providers.braintree.declines import explain as braintree_explain
from paywatch.providers.checkout.declines import explain as checkout_explain
from paywatch.providers.stripe.declines import classify_stripe
from paywatch.schemas.models import DeclineCategory
from tests.fake_providers import FakeProviders, serve_providers
from tests.kafka_helpers import eventually

SOFT, ACTION = DeclineCategory.SOFT, DeclineCategory.ACTION


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviders]:
    async with serve_providers() as running:
        yield running


@dataclass(frozen=True)
class Case:
    """How to set up, decline and classify one provider's retry."""

    provider: str
    setup: Callable[[FakeProviders, str], ChargeRequest]
    soft: tuple[str, str | None]
    """A decline (code, Authorize.Net responseCode) the fake gives; classifies SOFT."""
    action: tuple[str, str | None]
    """Another one that classifies ACTION (the customer must update the card)."""
    classify: Callable[[str], DeclineCategory]
    """The provider's webhook classification of a decline code."""
    key_header: str | None
    """The idempotency header; None: the provider has none (resumed lookup instead)."""
    charge_path: str
    """Part of the path of the charge request (the one the key header rides on)."""


def _request(provider: str, invoice: str, customer: str | None, **extra: object) -> ChargeRequest:
    fields: dict[str, object] = {
        "tenant": "acme",
        "provider": provider,
        "command_id": str(uuid.uuid4()),
        "invoice_ref": invoice,
        "customer_ref": customer,
        "subscription_ref": None,
        "payment_ref": None,
        "amount_minor": 2599,
        "currency": "USD",
        "attempt": 2,
    }
    return ChargeRequest(**{**fields, **extra})  # type: ignore[arg-type]


def _stripe(fake: FakeProviders, u: str) -> ChargeRequest:
    fake.stripe_invoice(f"in_{u}", f"cus_{u}", 2599, "usd")
    return _request("stripe", f"in_{u}", f"cus_{u}", subscription_ref=f"sub_{u}")


def _braintree(fake: FakeProviders, u: str) -> ChargeRequest:
    fake.braintree_subscription(f"sub{u}", f"cus{u}", "25.99")
    return _request("braintree", f"sub{u}:2026-01-01", f"cus{u}", subscription_ref=f"sub{u}")


def _authorizenet(fake: FakeProviders, u: str) -> ChargeRequest:
    customer = str(int(u, 16) % 10**9)
    fake.anet_profile(customer, (f"{customer}1", False), (f"{customer}2", True))
    return _request("authorizenet", f"INV-{u}", customer)


def _adyen(fake: FakeProviders, u: str) -> ChargeRequest:
    fake.adyen_shopper(f"shopper-{u}", f"TOKEN{u.upper()}")
    return _request("adyen", f"INV-{u}", f"shopper-{u}")


def _checkout(fake: FakeProviders, u: str) -> ChargeRequest:
    fake.checkout_customer(f"cus_{u}")
    return _request("checkout", f"INV-{u}", f"cus_{u}")


def _adyen_category(code: str) -> DeclineCategory:
    verdict = REFUSAL_REASONS.lookup(code)
    return verdict.category if verdict else DeclineCategory.UNKNOWN


CASES = {
    "stripe": Case(
        "stripe",
        _stripe,
        ("insufficient_funds", None),
        ("expired_card", None),
        lambda code: classify_stripe(code="card_declined", decline_code=code),
        "idempotency-key",
        "/pay",
    ),
    "braintree": Case(
        "braintree",
        _braintree,
        ("2001", None),
        ("2004", None),
        lambda code: braintree_explain(Facts(code=code)).category,
        None,
        "/transactions",
    ),
    "authorizenet": Case(
        "authorizenet",
        _authorizenet,
        ("2", "2"),
        ("8", "3"),  # responseCode 3 "card expired": a decline, not a Rejected
        lambda code: authorizenet_explain(code, False).category,
        None,
        "/xml/v1/request.api",
    ),
    "adyen": Case(
        "adyen",
        _adyen,
        ("12", None),
        ("6", None),
        _adyen_category,  # the code is the refusalReason keyed as the webhooks key it
        "idempotency-key",
        "/v71/payments",
    ),
    "checkout": Case(
        "checkout",
        _checkout,
        ("20051", None),
        ("20054", None),
        lambda code: checkout_explain(code).category,
        "cko-idempotency-key",
        "/payments",
    ),
}
KEYED = [p for p in LIVE_PROVIDERS if CASES[p].key_header]
LOOKUP = [p for p in LIVE_PROVIDERS if not CASES[p].key_header]


def _client(fake: FakeProviders, provider: str, timeout_s: float = 10.0) -> ChargeClient:
    return client_for(provider, fake.secrets(provider), timeout_s=timeout_s)


def _setup(fake: FakeProviders, provider: str) -> ChargeRequest:
    return CASES[provider].setup(fake, uuid.uuid4().hex[:10])


def _decline(fake: FakeProviders, request: ChargeRequest, decline: tuple[str, str | None]) -> None:
    subject = request.customer_ref
    assert subject is not None
    fake.decline(request.provider, subject, decline[0], decline[1])


def test_the_cases_cover_every_live_provider() -> None:
    assert set(CASES) == set(LIVE_PROVIDERS) == set(CREDENTIALS)


@pytest.mark.parametrize("provider", LIVE_PROVIDERS)
async def test_paid(fake: FakeProviders, provider: str) -> None:
    request = _setup(fake, provider)
    client = _client(fake, provider)
    try:
        result = await client.charge(request)
    finally:
        await client.aclose()
    assert result.succeeded and result.decline_code is None
    [charge] = fake.ledger(provider)
    assert charge.result == "paid"
    assert result.provider_ref == charge.ref
    assert (charge.amount_minor, charge.currency.upper() if charge.currency else None) == (
        2599,
        "USD",
    )
    assert charge.customer == request.customer_ref


@pytest.mark.parametrize("provider", LIVE_PROVIDERS)
@pytest.mark.parametrize(("which", "category"), [("soft", SOFT), ("action", ACTION)])
async def test_declined_code_classifies_like_the_webhooks(
    fake: FakeProviders, provider: str, which: str, category: DeclineCategory
) -> None:
    case = CASES[provider]
    request = _setup(fake, provider)
    _decline(fake, request, case.soft if which == "soft" else case.action)
    client = _client(fake, provider)
    try:
        result = await client.charge(request)
    finally:
        await client.aclose()
    assert not result.succeeded
    [charge] = fake.ledger(provider)
    assert charge.result == "declined" and result.provider_ref == charge.ref
    assert result.decline_code is not None
    assert case.classify(result.decline_code) is category, result
    # The client classifies it itself, with the provider's own tables, as its webhooks are.
    assert result.decline is not None
    assert (result.decline.code, result.decline.category) == (result.decline_code, category)


@pytest.mark.parametrize("provider", LIVE_PROVIDERS)
@pytest.mark.parametrize("fault", ["500", "429", "timeout", "401"])
async def test_unavailable_charges_nothing(fake: FakeProviders, provider: str, fault: str) -> None:
    request = _setup(fake, provider)
    secrets = fake.secrets(provider)
    if fault == "401":
        first = CREDENTIALS[provider]
        wrong = next(name for name in first if "merchant" not in name)
        secrets[wrong] = secrets[wrong][:-3] + "xyz"
    elif fault == "timeout":
        fake.hang(provider)
    else:
        fake.fail(provider, int(fault))
    client = client_for(provider, secrets, timeout_s=1.0 if fault == "timeout" else 10.0)
    try:
        with pytest.raises(Unavailable):
            await client.charge(request)
    finally:
        await client.aclose()
    assert fake.ledger(provider) == []
    assert fake.received(provider), "the request reached the fake"


@pytest.mark.parametrize("provider", KEYED)
async def test_idempotency_key_on_the_wire(fake: FakeProviders, provider: str) -> None:
    case = CASES[provider]
    request = _setup(fake, provider)
    client = _client(fake, provider)
    try:
        await client.charge(request)
    finally:
        await client.aclose()
    [sent] = [r for r in fake.received(provider, case.charge_path) if r.method == "POST"]
    assert case.key_header is not None
    assert sent.headers[case.key_header] == request.command_id


@pytest.mark.parametrize("provider", KEYED)
@pytest.mark.parametrize("declined", [False, True])
async def test_keyed_repeat_charges_once(
    fake: FakeProviders, provider: str, declined: bool
) -> None:
    request = _setup(fake, provider)
    if declined:
        _decline(fake, request, CASES[provider].soft)
    client = _client(fake, provider)
    try:
        first = await client.charge(request)
        again = await client.charge(request, resumed=True)
        fresh = _client(fake, provider)  # another executor, same key
        try:
            third = await fresh.charge(request)
        finally:
            await fresh.aclose()
    finally:
        await client.aclose()
    assert first == again == third
    assert len(fake.ledger(provider)) == 1


@pytest.mark.parametrize("provider", KEYED)
async def test_keyed_repeat_while_the_first_is_in_flight(
    fake: FakeProviders, provider: str
) -> None:
    """Stripe 409 / Adyen 704 / Checkout.com 409: Unavailable, and still one charge."""
    request = _setup(fake, provider)
    fake.slow(provider, 3.0)
    client = _client(fake, provider)
    try:
        first = asyncio.create_task(client.charge(request))
        await eventually(lambda: _ledger(fake, provider), timeout=30, what="the first charge")
        with pytest.raises(Unavailable):
            await client.charge(request, resumed=True)
        assert (await first).succeeded
    finally:
        await client.aclose()
    assert len(fake.ledger(provider)) == 1


async def _ledger(fake: FakeProviders, provider: str) -> bool:
    return bool(fake.ledger(provider))


async def test_braintree_resumed_finds_the_paid_charge(fake: FakeProviders) -> None:
    request = _setup(fake, "braintree")
    client = _client(fake, "braintree")
    try:
        first = await client.charge(request)
        resumed = await client.charge(request, resumed=True)
        assert resumed == first and first.succeeded
        assert len(fake.ledger("braintree")) == 1
        # Without the lookup the retry reaches Braintree again, which refuses it (91531:
        # the subscription is no longer past due): the paid command would be dead-lettered.
        with pytest.raises(Rejected, match="91531"):
            await client.charge(request)
    finally:
        await client.aclose()
    [search] = fake.received("braintree", "advanced_search_ids")
    assert b"<order-id><is>pw-" in search.body


async def test_braintree_resumed_finds_the_decline_instead_of_a_second_attempt(
    fake: FakeProviders,
) -> None:
    request = _setup(fake, "braintree")
    _decline(fake, request, CASES["braintree"].soft)
    client = _client(fake, "braintree")
    try:
        first = await client.charge(request)
        resumed = await client.charge(request, resumed=True)
        assert resumed == first and resumed.decline_code == "2001"
        assert len(fake.ledger("braintree")) == 1
        await client.charge(request)  # no lookup: a second attempt on the card
    finally:
        await client.aclose()
    assert len(fake.ledger("braintree")) == 2


@pytest.mark.parametrize("declined", [False, True])
async def test_authorizenet_resumed_finds_the_earlier_transaction(
    fake: FakeProviders, declined: bool
) -> None:
    fake.anet_duplicate_window_s = 0  # the resumed try comes after Authorize.Net's window
    request = _setup(fake, "authorizenet")
    if declined:
        _decline(fake, request, CASES["authorizenet"].soft)
    client = _client(fake, "authorizenet")
    try:
        first = await client.charge(request)
        resumed = await client.charge(request, resumed=True)
        assert resumed == first
        assert len(fake.ledger("authorizenet")) == 1
        again = await client.charge(request)  # no lookup: charged a second time
    finally:
        await client.aclose()
    assert again.provider_ref != first.provider_ref
    assert len(fake.ledger("authorizenet")) == 2
    [created, _] = [r for r in fake.received("authorizenet") if b"createTransaction" in r.body]
    customer = request.customer_ref
    assert f'"paymentProfileId": "{customer}2"'.encode() in created.body, "the default profile"


async def test_authorizenet_held_for_review_is_no_outcome_yet(fake: FakeProviders) -> None:
    """responseCode 4: neither paid nor declined; a resumed try finds it, never charges."""
    fake.anet_duplicate_window_s = 0
    request = _setup(fake, "authorizenet")
    _decline(fake, request, ("252", "4"))
    client = _client(fake, "authorizenet")
    try:
        with pytest.raises(Unavailable, match="held for review"):
            await client.charge(request)
        with pytest.raises(Unavailable, match="FDSPendingReview"):
            await client.charge(request, resumed=True)
    finally:
        await client.aclose()
    assert len(fake.ledger("authorizenet")) == 1


async def test_authorizenet_duplicate_inside_the_window_is_unavailable(
    fake: FakeProviders,
) -> None:
    request = _setup(fake, "authorizenet")
    client = _client(fake, "authorizenet")
    try:
        assert (await client.charge(request)).succeeded
        with pytest.raises(Unavailable, match="processing error 11"):
            await client.charge(request)
    finally:
        await client.aclose()
    assert len(fake.ledger("authorizenet")) == 1


async def test_stripe_already_paid_is_a_success_and_void_is_rejected(
    fake: FakeProviders,
) -> None:
    paid = _setup(fake, "stripe")
    client = _client(fake, "stripe")
    try:
        first = await client.charge(paid)
        other_command = dataclasses.replace(paid, command_id=str(uuid.uuid4()))
        again = await client.charge(other_command)  # a new key: Stripe answers 400
        assert again.succeeded and again.provider_ref == first.provider_ref
        void = _setup(fake, "stripe")
        fake.stripe_invoices[void.invoice_ref]["status"] = "void"
        with pytest.raises(Rejected, match="invoice_not_open"):
            await client.charge(void)
        with pytest.raises(Rejected, match="resource_missing"):
            await client.charge(dataclasses.replace(paid, invoice_ref="in_missing"))
    finally:
        await client.aclose()
    assert len(fake.ledger("stripe")) == 1


def test_stripe_live_key_needs_an_explicit_api_base() -> None:
    with pytest.raises(Rejected, match="explicit api_base"):
        client_for("stripe", {"api_key": "sk_live_abc123"})


async def test_checkout_pending_is_read_back_until_it_settles(fake: FakeProviders) -> None:
    request = _setup(fake, "checkout")
    assert request.customer_ref is not None
    fake.checkout_pending(request.customer_ref)
    client = _client(fake, "checkout")
    try:
        with pytest.raises(Unavailable, match="Pending"):
            await client.charge(request)
        [charge] = fake.ledger("checkout")
        fake.settle_checkout(charge.ref, "Captured")
        result = await client.charge(request, resumed=True)
    finally:
        await client.aclose()
    assert result.succeeded and result.provider_ref == charge.ref
    assert len(fake.ledger("checkout")) == 1


def _rejections() -> list[tuple[str, Callable[[FakeProviders, ChargeRequest], ChargeRequest]]]:
    def replace(**fields: object) -> Callable[[FakeProviders, ChargeRequest], ChargeRequest]:
        return lambda fake, r: dataclasses.replace(r, **fields)  # type: ignore[arg-type]

    def no_profiles(fake: FakeProviders, r: ChargeRequest) -> ChargeRequest:
        assert r.customer_ref is not None
        fake.anet_profile(r.customer_ref)
        return r

    def past_due_no_more(fake: FakeProviders, r: ChargeRequest) -> ChargeRequest:
        assert r.subscription_ref is not None
        fake.bt_subscriptions[r.subscription_ref]["status"] = "Canceled"
        return r

    return [
        ("braintree", replace(subscription_ref=None)),
        ("braintree", replace(subscription_ref="sub_unknown")),
        ("braintree", past_due_no_more),
        ("authorizenet", replace(customer_ref="999999999999")),
        ("authorizenet", no_profiles),
        ("authorizenet", replace(amount_minor=None)),
        ("adyen", replace(customer_ref="shopper-without-card")),
        ("adyen", replace(customer_ref=None)),
        ("checkout", replace(customer_ref="cus_unknown")),
        ("checkout", replace(currency=None)),
    ]


@pytest.mark.parametrize(("provider", "change"), _rejections())
async def test_rejected(
    fake: FakeProviders,
    provider: str,
    change: Callable[[FakeProviders, ChargeRequest], ChargeRequest],
) -> None:
    request = change(fake, _setup(fake, provider))
    client = _client(fake, provider)
    try:
        with pytest.raises(Rejected):
            await client.charge(request)
    finally:
        await client.aclose()
    assert fake.ledger(provider) == []


@pytest.mark.parametrize("provider", LIVE_PROVIDERS)
def test_missing_secret_is_named_never_shown(provider: str) -> None:
    secrets = {"api_base": "http://127.0.0.1:9", **CASES_SECRETS[provider]}
    for name in CREDENTIALS[provider]:
        partial = {k: v for k, v in secrets.items() if k != name}
        with pytest.raises(Rejected) as caught:
            client_for(provider, partial)
        assert name in str(caught.value)
        for value in partial.values():
            assert value not in str(caught.value)


def test_unknown_provider_is_rejected() -> None:
    with pytest.raises(Rejected, match="paypal"):
        client_for("paypal", {})


CASES_SECRETS = {
    "stripe": {"api_key": "sk_test_k1"},
    "braintree": {"merchant_id": "m1", "public_key": "pub1", "private_key": "priv1"},
    "authorizenet": {"api_login_id": "login1", "transaction_key": "tkey1"},
    "adyen": {"api_key": "adyenkey1", "merchant_account": "acct1"},
    "checkout": {"secret_key": "sk_sbox_1"},
}


AUTH_SECRETS = {
    "stripe": ("api_key",),
    "braintree": ("public_key", "private_key"),
    "authorizenet": ("api_login_id", "transaction_key"),
    "adyen": ("api_key",),
    "checkout": ("secret_key",),
}
"""The credentials that authenticate. ``merchant_id`` / ``merchant_account`` are account
identifiers that ride in URLs (and so in httpx's request log), not credentials."""


@pytest.mark.parametrize("provider", LIVE_PROVIDERS)
async def test_no_credential_in_errors_or_logs(
    fake: FakeProviders, provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    good = fake.secrets(provider)
    wrong = dict(good)
    for name in AUTH_SECRETS[provider]:
        wrong[name] = good[name] + "WRONG"
    declined = _setup(fake, provider)
    _decline(fake, declined, CASES[provider].soft)
    rejected = _setup(fake, provider)
    if provider == "stripe":
        rejected = dataclasses.replace(rejected, invoice_ref="in_missing")
    else:
        rejected = next(change for p, change in _rejections() if p == provider)(fake, rejected)
    attempts = [
        (good, _setup(fake, provider)),  # answered 500 (scripted below)
        (good, _setup(fake, provider)),  # paid
        (good, declined),
        (wrong, _setup(fake, provider)),
        (good, rejected),
    ]
    fake.fail(provider, 500, times=1)
    for secrets, request in attempts:
        client = client_for(provider, secrets)
        try:
            await client.charge(request)
        except ChargeError as exc:
            errors.append(exc)
        finally:
            await client.aclose()
    assert len(errors) == 3, errors  # 500, wrong credentials, rejected
    texts = [caplog.text] + [_chain(e) for e in errors]
    for name in AUTH_SECRETS[provider]:
        for value in (good[name], wrong[name]):
            for text in texts:
                assert value not in text, f"{name} leaked"
    assert "charge" in caplog.text, "the clients do log their outcomes"


def _chain(exc: BaseException | None) -> str:
    """An exception's text with every cause and context, as a traceback would show it."""
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc} {exc.args!r}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)
