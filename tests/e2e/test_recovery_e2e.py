"""Recovery end to end: `paywatch up` at PAYWATCH_TIME_SCALE=43200 (a saga day = 2 s).

Three signed Stripe failures for tenant `demo`, with paywatch owning Stripe retries (set
through the policy API as an operator would): a soft decline is retried on the schedule
by the sandbox executor and recovers; a stolen card gets no retry and a request for a new
payment method; a Mastercard "do not try again" (MAC 03) stops at once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from paywatch.ops.bootstrap import DEMO_STRIPE_SECRET
from paywatch.settings import Settings
from tests.builders import stripe as samples
from tests.e2e.test_up import _banner_line
from tests.kafka_helpers import eventually
from tests.procs import settings_env

# The day-1 retry declines again, the day-3 retry succeeds. Retries are planned at 10:00
# (saga time) on days 1 and 3 after the failure's date, i.e. 0.x-1.x and 2.x-3.x whole days
# after the failure itself: the simulator's step at day 2 separates them whatever the hour.
SIMULATOR = json.dumps({"SOFT": {"0": 0.0, "2": 1.0}})
# Stripe's `created` has whole seconds: the failure can look up to 1 wall second early.
# At 43200 that is half a saga day, which keeps the day-1 retry below the day-2 step and
# the day-3 retry above it (at 86400 a whole day of error let them overlap).
SCALE = 43200.0
DAY_S = 86400.0 / SCALE  # wall seconds per saga day


def _failure(invoice: str, event: str, **charge: Any) -> bytes:
    failed = samples.stripe_charge_failed(
        basil=False, invoice=invoice, charge_id=f"ch_{invoice}", amount=4900, **charge
    )
    # One card per invoice: a stolen card blocks every invoice on that card (correctly),
    # so the samples' shared fingerprint would stop the soft decline's retries too.
    failed["payment_method_details"]["card"]["fingerprint"] = f"fp_{invoice}"
    body = samples.stripe_event(
        "charge.failed",
        failed,
        event_id=event,
        created=int(time.time()),
        api_version="2024-06-20",
    )
    return samples.stripe_body(body)


async def test_soft_decline_recovers_stolen_card_and_mastercard_03_are_never_retried(
    test_settings: Settings, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    settings = test_settings.model_copy(
        update={
            "ingest_port": free_port(),
            "api_port": free_port(),
            "state_dir": tmp_path / "state",
            "time_scale": SCALE,
            "simulator_success": SIMULATOR,
            "simulator_seed": 7,
        }
    )
    out = tmp_path / "up.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "paywatch", "up"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=settings_env(settings),
        )
    try:

        async def ready() -> bool:
            assert proc.poll() is None, out.read_text()
            return "Stop: Ctrl-C" in out.read_text()

        await eventually(ready, timeout=180, what="the ready banner")
        analyst = _banner_line(out, "analyst API key")
        operator = _banner_line(out, "operator API key")
        api = f"http://127.0.0.1:{settings.api_port}"
        ingest = f"http://127.0.0.1:{settings.ingest_port}/webhooks/stripe/demo"
        async with httpx.AsyncClient(base_url=api, timeout=10) as client:
            policy = (await client.get("/v1/policy", headers=_auth(operator))).json()["policy"]
            policy["owners"] = {**policy.get("owners", {}), "stripe": "paywatch"}
            put = await client.put("/v1/policy", json=policy, headers=_auth(operator))
            assert put.status_code == 200, put.text

            bodies = [
                _failure(
                    "in_e2e_soft",
                    "evt_e2e_soft",
                    reason="insufficient_funds",
                    network_decline_code="51",
                ),
                _failure("in_e2e_stolen", "evt_e2e_stolen", reason="stolen_card"),
                _failure(
                    "in_e2e_mc03",
                    "evt_e2e_mc03",
                    reason="do_not_honor",
                    brand="mastercard",
                    last4="4444",
                    network_advice_code="03",
                    network_decline_code="05",
                ),
            ]
            for body in bodies:
                stamp = int(time.time())
                sig = samples.sign_stripe(body, DEMO_STRIPE_SECRET, stamp)
                resp = await client.post(
                    ingest,
                    content=body,
                    headers={"Stripe-Signature": sig, "Content-Type": "application/json"},
                )
                assert resp.status_code == 200, resp.text

            async def status(ref: str, wanted: str) -> dict[str, Any] | None:
                assert proc.poll() is None, out.read_text()
                resp = await client.get(f"/v1/invoices/{ref}", headers=_auth(analyst))
                inv = resp.json() if resp.status_code == 200 else None
                return inv if inv and inv["status"] == wanted else None

            soft = await eventually(
                lambda: status("in_e2e_soft", "recovered"), timeout=120, what="soft recovered"
            )
            stolen = await eventually(
                lambda: status("in_e2e_stolen", "awaiting_customer"), timeout=60, what="stolen"
            )
            mc03 = await eventually(
                lambda: status("in_e2e_mc03", "awaiting_customer"), timeout=60, what="MC 03"
            )
            # Several saga days later the two stopped invoices still have no retry.
            await eventually(
                lambda: _days_passed(client, analyst, "in_e2e_mc03", 8),
                timeout=60,
                what="8 saga days",
            )
            timelines = {
                ref: await _timeline(client, analyst, ref)
                for ref in ("in_e2e_soft", "in_e2e_stolen", "in_e2e_mc03")
            }
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("paywatch up did not stop on Ctrl-C") from None

    assert (soft["amount_minor"], soft["provider"]) == (4900, "stripe")
    soft_retries = _commands(timelines["in_e2e_soft"], "RETRY_PAYMENT")
    assert len(soft_retries) == 2, timelines["in_e2e_soft"]
    # On the schedule: day 1, then day 3 (two saga days apart).
    due = [_at(c["due_at"]) for c in soft_retries]
    assert 1.0 * DAY_S <= due[1] - due[0] <= 3.5 * DAY_S, due
    outcomes = [i for i in timelines["in_e2e_soft"] if i["kind"] == "event" and i["paywatch_retry"]]
    assert [o["type"] for o in outcomes] == ["PAYMENT_FAILED", "PAYMENT_SUCCEEDED"]
    assert soft["recovery"]["state"] == "recovered"

    for inv, ref, rule in ((stolen, "in_e2e_stolen", None), (mc03, "in_e2e_mc03", "mastercard")):
        items = timelines[ref]
        assert _commands(items, "RETRY_PAYMENT") == [], ref
        assert _commands(items, "REQUEST_PAYMENT_METHOD_UPDATE"), ref
        stop = next(
            i for i in items if i["kind"] == "transition" and i["to_state"] == "awaiting_customer"
        )
        assert stop["rule"]["edition"], stop
        if rule:
            assert stop["rule"]["id"].startswith(rule), stop
        assert inv["recovery"]["state"] == "awaiting_customer"


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def _timeline(client: httpx.AsyncClient, key: str, ref: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
        resp = await client.get(f"/v1/invoices/{ref}/timeline", params=params, headers=_auth(key))
        assert resp.status_code == 200, resp.text
        page = resp.json()
        items.extend(page["data"])
        cursor = page["next_cursor"]
        if not cursor:
            return items


def _commands(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [i for i in items if i["kind"] == "command" and i["type"] == kind]


async def _days_passed(client: httpx.AsyncClient, key: str, ref: str, days: int) -> bool:
    items = await _timeline(client, key, ref)
    first = next((i for i in items if i["kind"] == "transition"), None)
    if first is None:
        return False
    elapsed = time.time() - _at(first["at"])
    return elapsed >= days * DAY_S
