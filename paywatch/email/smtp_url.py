"""Where mail goes: ``PAYWATCH_SMTP_URL`` or a tenant's sealed ``email``/``smtp_url`` secret.

Forms: ``smtp://[user[:pass]@]host[:port][?starttls=true|false]`` (port 587 by default;
STARTTLS on unless ``starttls=false``, and then required: a server that does not offer it
is an error, never a fallback to clear text) and ``smtps://...`` (implicit TLS, port 465).
User and password are percent-decoded (``%40`` for ``@``). ``tls_verify=false`` skips
certificate checks (test servers only). An error names the part that is wrong but never
repeats the URL, since it carries the password; ``SmtpServer.shown`` is the URL without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from paywatch.errors import ConfigError

DEFAULT_PORTS = {"smtp": 587, "smtps": 465}
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_OPTIONS = ("starttls", "tls_verify")


class SmtpUrlError(ConfigError):
    """An SMTP URL that does not parse (the message never carries the password)."""


@dataclass(frozen=True)
class SmtpServer:
    """One SMTP server and how to talk to it."""

    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    verify_tls: bool = True

    @property
    def shown(self) -> str:
        """The URL as it may be logged: the password replaced by ``***``."""
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}:***@" if self.username else ""
        query = "" if self.implicit_tls else f"?starttls={str(self.starttls).lower()}"
        return f"{scheme}://{user}{self.host}:{self.port}{query}"

    def __str__(self) -> str:
        return self.shown


def _flag(name: str, value: str) -> bool:
    try:
        return _BOOLS[value.lower()]
    except KeyError:
        raise SmtpUrlError(f"SMTP URL: {name}= must be true or false") from None


def parse_smtp_url(url: str) -> SmtpServer:
    """The server an SMTP URL names; SmtpUrlError saying what is wrong (never the URL)."""
    if not url or "\x00" in url or any(c.isspace() for c in url):
        raise SmtpUrlError("SMTP URL: empty, or holds spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise SmtpUrlError("SMTP URL: the scheme must be smtp:// or smtps://")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise SmtpUrlError("SMTP URL: the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise SmtpUrlError("SMTP URL: no host")
    if parts.path not in ("", "/") or parts.fragment:
        raise SmtpUrlError("SMTP URL: no path or #fragment allowed after the host")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    if unknown := sorted(set(options) - set(_OPTIONS)):
        raise SmtpUrlError(f"SMTP URL: unknown option(s) {', '.join(unknown)}")
    implicit = parts.scheme == "smtps"
    if implicit and "starttls" in options:
        raise SmtpUrlError("SMTP URL: smtps:// is TLS from the start; starttls= is for smtp://")
    return SmtpServer(
        host=parts.hostname,
        port=port,
        implicit_tls=implicit,
        starttls=not implicit and _flag("starttls", options.get("starttls", "true")),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        verify_tls=_flag("tls_verify", options.get("tls_verify", "true")),
    )
