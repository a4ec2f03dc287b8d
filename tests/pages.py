"""Walking a query-API list route page by page, checking every page on the way."""

from __future__ import annotations

from typing import Any

import httpx


async def walk(
    api: httpx.AsyncClient,
    path: str,
    headers: dict[str, str],
    fields: set[str],
    key: str,
    **params: Any,
) -> list[str]:
    """Every page of ``path``: each item's ``key`` in order; every item has exactly
    ``fields``, no page is larger than ``limit``, nothing is served twice."""
    found: list[str] = []
    cursor = None
    for _ in range(50):
        query = params | ({"cursor": cursor} if cursor else {})
        r = await api.get(path, params=query, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"data", "next_cursor"}
        assert len(body["data"]) <= params.get("limit", 50)
        assert body["data"] or not found, "an empty page after a non-null next_cursor"
        for item in body["data"]:
            assert set(item) == fields, item
        found += [item[key] for item in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            assert len(found) == len(set(found)), f"an item served twice: {found}"
            return found
    raise AssertionError("pagination did not end")
