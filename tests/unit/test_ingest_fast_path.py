"""The ingest's direct dispatch of webhook POSTs picks exactly what its route would match.

``IngestApp`` hands a request to the webhook endpoint before FastAPI's middleware and
router when ``webhook_target`` recognises it; everything else goes through FastAPI. The
two must agree: a path the Starlette route ``/webhooks/{provider}/{tenant}`` matches with
POST is taken directly, with the same path parameters; any other request is left alone.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from starlette.routing import Match, Route

from paywatch.api.ingest.app import WEBHOOK_PATH
from paywatch.api.ingest.webhooks import WebhookEndpoint, json_reply, webhook_target

ROUTE = Route(WEBHOOK_PATH, WebhookEndpoint(), methods=["POST"])


def _scope(path: str, method: str = "POST", root_path: str = "") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": root_path}


def _routed(scope: dict[str, Any]) -> tuple[str, str] | None:
    match, child = ROUTE.matches(scope)
    if match is not Match.FULL:
        return None
    params = child["path_params"]
    return params["provider"], params["tenant"]


_SEGMENT = st.text(alphabet=st.sampled_from("ab/-_.%é \x00"), max_size=6)


@given(st.lists(_SEGMENT, max_size=4), st.sampled_from(["", "/webhooks", "/webhooks/", "/x"]))
@example(["stripe", "acme"], "/webhooks/")
@example(["stripe", "acme", ""], "/webhooks/")
@example(["", "acme"], "/webhooks/")
def test_direct_dispatch_matches_the_route(parts: list[str], prefix: str) -> None:
    scope = _scope(prefix + "/".join(parts))
    assert webhook_target(scope) == _routed(scope)


def test_webhook_posts_are_taken_with_their_parameters() -> None:
    assert webhook_target(_scope("/webhooks/stripe/acme")) == ("stripe", "acme")
    assert webhook_target(_scope("/webhooks/stripe/acme/")) is None
    assert webhook_target(_scope("/webhooks/stripe")) is None
    assert webhook_target(_scope("/webhooks//acme")) is None


def test_everything_else_goes_through_fastapi() -> None:
    assert webhook_target(_scope("/webhooks/braintree/acme", method="GET")) is None
    assert webhook_target(_scope("/webhooks/stripe/acme", method="PUT")) is None
    assert webhook_target(_scope("/health", method="GET")) is None
    assert webhook_target(_scope("/metrics", method="POST")) is None
    assert webhook_target(_scope("/webhooks/stripe/acme") | {"type": "websocket"}) is None
    # Under a root path the router strips it first: left to the router.
    assert webhook_target(_scope("/api/webhooks/stripe/acme", root_path="/api")) is None


def test_json_answers_render_as_starlette_json_response() -> None:
    from starlette.responses import JSONResponse

    content = {"error": "unknown_tenant", "detail": "no tenant 'é\"x'", "offset": 3}
    status, body, content_type = json_reply(404, content)
    expected = JSONResponse(content, status_code=404)
    assert (status, body) == (expected.status_code, expected.body)
    assert content_type == expected.headers["content-type"].encode()


def test_a_reply_naming_a_lone_surrogate_is_still_sent() -> None:
    """A provider event id decoded from a "\\ud800" escape cannot be UTF-8: the answer (sent
    after the webhook was stored) escapes it rather than failing with a 500."""
    import json

    from paywatch.api.ingest.webhooks import json_reply

    status, body, _ = json_reply(200, {"status": "accepted", "provider_event_id": "evt_\ud800"})
    assert status == 200 and json.loads(body) == {
        "status": "accepted",
        "provider_event_id": "evt_\ud800",
    }
    assert json_reply(200, {"id": "é"})[1] == '{"id":"é"}'.encode()


@given(st.dictionaries(st.text(), st.text() | st.integers(-(2**63), 2**63 - 1), max_size=5))
def test_json_answers_are_starlettes_bytes_for_any_text(content: dict[str, object]) -> None:
    from starlette.responses import JSONResponse

    try:
        expected = JSONResponse(content).body
    except UnicodeEncodeError:  # a lone surrogate: the escaped answer, checked above
        return
    assert json_reply(200, content)[1] == expected


def test_ingest_ids_are_random_version_4_uuids() -> None:
    import uuid

    from paywatch.api.ingest.webhooks import new_ingest_id

    ids = [new_ingest_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
