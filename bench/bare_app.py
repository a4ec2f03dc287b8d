"""Baseline for bench_ingest.py: a bare FastAPI `POST /plain` that reads the body and answers 200.

Run: ``python bench/bare_app.py PORT``. Served by paywatch's own uvicorn setup
(``paywatch.ops.runners._serve``), so only the app differs from the ingest process.
"""

from __future__ import annotations

import sys

from fastapi import FastAPI, Request, Response

from paywatch.ops.runners import _serve
from paywatch.settings import Settings

app = FastAPI(title="bench baseline", docs_url=None, redoc_url=None, openapi_url=None)


@app.post("/plain")
async def plain(request: Request) -> Response:
    """Read the whole body, answer an empty 200."""
    await request.body()
    return Response(status_code=200)


def main(argv: list[str]) -> int:
    """Serve the app on 127.0.0.1:PORT until SIGTERM."""
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python bench/bare_app.py PORT", file=sys.stderr)
        return 2
    _serve(app, Settings(bind_host="127.0.0.1"), int(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
