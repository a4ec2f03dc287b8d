"""A local HTTP server playing the Xero and QuickBooks APIs (OAuth + resources) for tests.

The worker runs as a separate process and fetches over real sockets, so the fakes of
``tests.builders.xero.FakeLedgerApi`` (httpx handlers) are served by a
threaded ``http.server`` here. Each fake is mounted under a path prefix (``/xero``,
``/quickbooks``): its token URL is ``{base}/{prefix}/token`` and its API base
``{base}/{prefix}/api``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.builders import quickbooks as qbo
from tests.builders import xero as xs
from tests.builders.xero import FakeLedgerApi


@dataclass
class Ledgers:
    """The running fakes and where they answer."""

    base: str
    fakes: dict[str, FakeLedgerApi]

    def token_url(self, prefix: str) -> str:
        """OAuth token endpoint of one fake."""
        return f"{self.base}/{prefix}/token"

    def api_base(self, prefix: str) -> str:
        """API base (the tenant's ``api_base`` secret) of one fake."""
        return f"{self.base}/{prefix}/api"


def xero_fake(base: str) -> FakeLedgerApi:
    """Xero: rotates the refresh token on every refresh, as Xero does."""
    return FakeLedgerApi(token_url=f"{base}/xero/token", rotate=True)


def quickbooks_fake(base: str) -> FakeLedgerApi:
    """QuickBooks: keeps its refresh token."""
    return FakeLedgerApi(
        token_url=f"{base}/quickbooks/token",
        client_id=qbo.CLIENT_ID,
        client_secret=qbo.CLIENT_SECRET,
        refresh_token=qbo.REFRESH_TOKEN,
        rotate=False,
        expires_in=3600,
    )


def xero_path(invoice_id: str = xs.INVOICE_ID) -> str:
    """Request path of one Xero invoice under the fake."""
    return f"/xero/api/Invoices/{invoice_id}"


def quickbooks_path(kind: str, entity_id: str) -> str:
    """Request path (with query) of one QBO entity under the fake."""
    return "/quickbooks/api" + qbo.qbo_path(kind, entity_id)


@contextmanager
def serve_ledgers() -> Iterator[Ledgers]:
    """Start the server on a free port with a Xero and a QuickBooks fake; stop it after."""
    lock = threading.Lock()
    ledgers = Ledgers(base="", fakes={})

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            prefix = self.path.split("/")[1] if self.path.count("/") > 1 else ""
            fake = ledgers.fakes.get(prefix)
            if fake is None:
                response = httpx.Response(404)
            else:
                request = httpx.Request(
                    self.command,
                    f"{ledgers.base}{self.path}",
                    headers=dict(self.headers.items()),
                    content=body,
                )
                with lock:
                    response = fake(request)
            content = response.content
            self.send_response(response.status_code)
            for name, value in response.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = _answer
        do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ledgers.base = f"http://127.0.0.1:{server.server_address[1]}"
    ledgers.fakes.update(xero=xero_fake(ledgers.base), quickbooks=quickbooks_fake(ledgers.base))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ledgers
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
