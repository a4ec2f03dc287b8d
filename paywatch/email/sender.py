"""One SMTP conversation: the message made, sent over TLS or STARTTLS, the answer judged.

``Connection`` holds one aiosmtplib session to one server and sends messages in turn over
it (a batch of a server's emails shares one connection; any error that leaves the session
in doubt closes it, and the next message opens a new one). The answer (``Outcome``):

* accepted (250 after DATA): ``sent``, with the Message-ID paywatch gave it;
* a 5xx to RCPT or DATA: ``bounce`` (the server refuses this recipient or message for good);
* a 5xx to MAIL FROM: ``failed`` (our sender is refused: a configuration problem that
  retrying does not fix);
* a 4xx anywhere, a refused login, a connection that fails, drops or times out: ``retry``
  (later, on the outbox schedule).

Only the server's synchronous refusal is seen here: a bounce the server reports later, as a
delivery status notification mailed back to the From address, is out of scope (it would
need a mailbox paywatch reads); so is the List-Unsubscribe mailto: form.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default
from email.utils import formatdate, make_msgid
from typing import Literal

import aiosmtplib

from paywatch.email.smtp_url import SmtpServer
from paywatch.email.templates import Rendered

log = logging.getLogger(__name__)

Kind = Literal["sent", "bounce", "failed", "retry"]
_POLICY = default.clone(max_line_length=998)
"""Headers up to SMTP's line limit: a long List-Unsubscribe URL stays one ``<url>``
(folded at 78 it would be RFC 2047-encoded, which mail clients do not read as a URL)."""
USER_AGENT = "paywatch-email/1"


@dataclass(frozen=True)
class Outcome:
    """What one send came to, and what to record (never a password)."""

    kind: Kind
    detail: str = ""
    message_id: str | None = None


@dataclass(frozen=True)
class Envelope:
    """Who a message is from and to, and its links' headers."""

    from_address: str
    to_address: str
    display_name: str | None = None
    reply_to: str | None = None
    unsubscribe_url: str | None = None
    email_id: str | None = None


def build_message(envelope: Envelope, rendered: Rendered) -> EmailMessage:
    """The MIME message: text and HTML alternatives, List-Unsubscribe (RFC 2369) with
    one-click unsubscribe (RFC 8058), and a Message-ID on the sender's domain."""
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = Address(display_name=envelope.display_name or "", addr_spec=envelope.from_address)
    msg["To"] = envelope.to_address
    if envelope.reply_to:
        msg["Reply-To"] = envelope.reply_to
    msg["Subject"] = rendered.subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=envelope.from_address.rpartition("@")[2])
    msg["X-Mailer"] = USER_AGENT
    if envelope.email_id:
        msg["X-Paywatch-Email-Id"] = envelope.email_id
    if envelope.unsubscribe_url:
        msg["List-Unsubscribe"] = f"<{envelope.unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg


def _tls_context(server: SmtpServer) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not server.verify_tls:  # tls_verify=false: a test server's self-signed certificate
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _said(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {exc.message}"


def judge(exc: Exception) -> Outcome:
    """The outcome of a send that raised ``exc``."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        said = "; ".join(_said(r) for r in exc.recipients)
        kind: Kind = "bounce" if codes and all(500 <= c < 600 for c in codes) else "retry"
        return Outcome(kind, f"recipient refused: {said}")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        kind = "failed" if 500 <= exc.code < 600 else "retry"
        return Outcome(kind, f"sender refused: {_said(exc)}")
    if isinstance(exc, aiosmtplib.SMTPDataError):
        kind = "bounce" if 500 <= exc.code < 600 else "retry"
        return Outcome(kind, f"message refused: {_said(exc)}")
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return Outcome("retry", f"login refused: {exc.code}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return Outcome("retry", f"server said {_said(exc)}")
    return Outcome("retry", f"{type(exc).__name__}: {exc}")


class Connection:
    """One SMTP session to ``server``, opened on first use and reused for later sends."""

    def __init__(self, server: SmtpServer, timeout_s: float) -> None:
        self.server = server
        self._timeout_s = timeout_s
        self._smtp: aiosmtplib.SMTP | None = None

    async def _open(self) -> aiosmtplib.SMTP:
        s = self.server
        smtp = aiosmtplib.SMTP(
            hostname=s.host, port=s.port, timeout=self._timeout_s, use_tls=s.implicit_tls,
            start_tls=s.starttls if not s.implicit_tls else False,
            tls_context=_tls_context(s) if (s.implicit_tls or s.starttls) else None,
            username=s.username, password=s.password,
        )  # fmt: skip
        await smtp.connect()
        return smtp

    async def send(self, envelope: Envelope, rendered: Rendered) -> Outcome:
        """Send one message; its outcome (a failed session is closed, never reused)."""
        msg = build_message(envelope, rendered)
        try:
            if self._smtp is None or not self._smtp.is_connected:
                self._smtp = await self._open()
            await self._smtp.send_message(
                msg, sender=envelope.from_address, recipients=[envelope.to_address]
            )
        except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPDataError) as exc:
            return judge(exc)  # the envelope was reset: the session goes on
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            return judge(exc)
        return Outcome("sent", message_id=str(msg["Message-ID"]))

    async def close(self) -> None:
        """End the session (QUIT when it still answers)."""
        smtp, self._smtp = self._smtp, None
        if smtp is None or not smtp.is_connected:
            return
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            smtp.close()
