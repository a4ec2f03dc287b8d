"""Customer email in pure code: SMTP URLs, templates, link tokens, SMTP answers (issue 11)."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta

import aiosmtplib
import pytest

from paywatch.email import links, templates
from paywatch.email.links import InvalidLink, LinkClaims, LinkSigner
from paywatch.email.sender import Envelope, build_message, judge
from paywatch.email.smtp_url import SmtpUrlError, parse_smtp_url
from paywatch.email.templates import SAMPLE, Template, TemplateError, render

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PASSWORD = "s3cr3t:p@ss/word"


# SMTP URLs ---------------------------------------------------------------------------------


def test_smtp_url_forms() -> None:
    s = parse_smtp_url("smtp://user%40acme:s3cr3t%3Ap%40ss%2Fword@mail.example:2525?starttls=true")
    assert (s.host, s.port, s.starttls, s.implicit_tls) == ("mail.example", 2525, True, False)
    assert (s.username, s.password) == ("user@acme", PASSWORD)
    assert PASSWORD not in repr(s) and PASSWORD not in s.shown and "***" in s.shown
    plain = parse_smtp_url("smtp://127.0.0.1:25?starttls=false")
    assert (plain.starttls, plain.implicit_tls, plain.username) == (False, False, None)
    assert parse_smtp_url("smtp://mail.example").port == 587
    tls = parse_smtp_url("smtps://u:p@mail.example?tls_verify=false")
    assert (tls.port, tls.implicit_tls, tls.starttls, tls.verify_tls) == (465, True, False, False)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://u:{pw}@mail.example", "scheme"),
        ("smtp://u:{pw}@mail.example:99999", "port"),
        ("smtp://u:{pw}@mail.example?starttls=maybe", "starttls"),
        ("smtp://u:{pw}@mail.example?debug=1", "unknown option"),
        ("smtps://u:{pw}@mail.example?starttls=true", "smtps://"),
        ("smtp://u:{pw}@mail.example/path", "path"),
        ("smtp://u:{pw}@", "host"),
        ("smtp://u:{pw}@mail.example x", "spaces"),
    ],
)
def test_smtp_url_errors_never_repeat_the_password(url: str, said: str) -> None:
    with pytest.raises(SmtpUrlError) as caught:
        parse_smtp_url(url.format(pw="hunter2secret"))
    assert said in str(caught.value)
    assert "hunter2secret" not in str(caught.value)


# Templates ---------------------------------------------------------------------------------


def test_every_builtin_renders_with_the_sample_values() -> None:
    for name, template in templates.BUILTIN.items():
        out = render(name, template, SAMPLE)
        assert SAMPLE["update_url"] in out.text and SAMPLE["unsubscribe_url"] in out.text, name
        assert out.html.startswith("<pre>") and "\n" not in out.subject


def test_the_sandbox_blocks_python_internals() -> None:
    for source in ("{{ ''.__class__.__mro__ }}", "{{ customer_ref.__class__ }}"):
        with pytest.raises(TemplateError) as caught:
            render("evil", Template("s", source), SAMPLE)
        assert "template evil, text" in str(caught.value)
    with pytest.raises(TemplateError):
        render("evil", Template("s", "{% for i in range(10**9) %}x{% endfor %}"), SAMPLE)


def test_html_is_autoescaped_and_text_is_not() -> None:
    values = {**SAMPLE, "customer_name": "<script>alert(1)</script>"}
    out = render("t", Template("Hi {{ customer_name }}", "{{ customer_name }}",
                               "<p>{{ customer_name }}</p>"), values)  # fmt: skip
    assert out.html == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert out.text == "<script>alert(1)</script>"
    text_only = render("t", Template("s", "<b>{{ customer_name }}</b>"), values)
    assert "<b>" not in text_only.html and "&lt;b&gt;" in text_only.html


def test_undefined_variables_and_syntax_errors_are_precise() -> None:
    with pytest.raises(TemplateError, match=r"template mine, text: 'coupon' is undefined"):
        render("mine", Template("s", "Use {{ coupon }}"), SAMPLE)
    with pytest.raises(TemplateError, match=r"template mine, html: line 2"):
        render("mine", Template("s", "t", "ok\n{% if %}"), SAMPLE)
    with pytest.raises(TemplateError, match="subject: renders empty"):
        render("mine", Template("{{ '' }}", "t"), SAMPLE)


def test_a_subject_is_one_line_whatever_the_template() -> None:
    out = render("t", Template("a\r\nBcc: x@evil.example\n{{ invoice_ref }}", "t"), SAMPLE)
    assert out.subject == "a Bcc: x@evil.example in_sample"


def test_check_refuses_bad_names_sizes_and_nul() -> None:
    with pytest.raises(TemplateError, match="template name"):
        templates.check("Bad-Name", Template("s", "t"))
    with pytest.raises(TemplateError, match="NUL"):
        templates.check("ok", Template("s", "t\x00"))
    with pytest.raises(TemplateError, match="text"):
        templates.check("ok", Template("s", "x" * (templates.MAX_TEXT + 1)))


def test_amounts_follow_the_currency_minor_digits() -> None:
    assert templates.amount_text(1234, "EUR") == "12.34"
    assert templates.amount_text(1234, "JPY") == "1234"
    assert templates.amount_text(-5, "USD") == "-0.05"


# Link tokens --------------------------------------------------------------------------------

CLAIMS = LinkClaims(
    "acme", "cus_1", "in_1", "unsubscribe", int((NOW + timedelta(days=1)).timestamp())
)


def test_a_token_round_trips_and_says_what_it_was_signed_for() -> None:
    signer = LinkSigner("master-key-one")
    assert signer.verify(signer.sign(CLAIMS), "unsubscribe", NOW) == CLAIMS


def test_tampered_forged_expired_and_misused_tokens_are_refused() -> None:
    signer = LinkSigner("master-key-one")
    token = signer.sign(CLAIMS)
    version, body, mac = token.split(".")
    other = links.sign(links.derive_key("master-key-one"), LinkClaims("evil", "cus_1", "in_1",
                       "unsubscribe", CLAIMS.expires))  # fmt: skip
    cases = {
        "altered payload": f"{version}.{other.split('.')[1]}.{mac}",
        "altered mac": f"{version}.{body}.{mac[:-2]}AA",
        "another key": LinkSigner("master-key-two").sign(CLAIMS),
        "another version": f"v2.{body}.{mac}",
        "junk": "not-a-token",
    }
    for case, bad in cases.items():
        with pytest.raises(InvalidLink):
            signer.verify(bad, "unsubscribe", NOW)
        assert case
    with pytest.raises(InvalidLink, match="expired"):
        signer.verify(token, "unsubscribe", NOW + timedelta(days=2))
    with pytest.raises(InvalidLink, match="not update"):
        signer.verify(token, "update", NOW)


def test_the_previous_master_key_still_verifies_during_a_rotation() -> None:
    old = LinkSigner("master-key-one").sign(CLAIMS)
    assert LinkSigner("master-key-two", "master-key-one").verify(old, "unsubscribe", NOW)
    with pytest.raises(InvalidLink):
        LinkSigner("master-key-two").verify(old, "unsubscribe", NOW)


def test_macs_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(links.hmac, "compare_digest", spy)
    signer = LinkSigner("master-key-one", "master-key-zero")
    signer.verify(signer.sign(CLAIMS), "unsubscribe", NOW)
    assert len(compared) == 2, "every key is compared, so timing does not tell which matched"


def test_a_tenant_verifies_its_update_token_with_its_link_secret() -> None:
    secret = links.new_link_secret()
    assert secret.startswith("pwl_") and len(secret) == 47
    update = LinkClaims("acme", "cus_1", "in_1", "update", CLAIMS.expires)
    token = links.sign(secret.encode(), update)
    # What README "Email" tells tenants to do, by hand:
    signed, _, mac = token.rpartition(".")
    expected = hmac.new(secret.encode(), signed.encode(), "sha256").digest()
    assert hmac.compare_digest(links._unb64(mac), expected)
    assert links.verify([secret.encode()], token, "update", NOW) == update


# SMTP answers and messages ------------------------------------------------------------------


def test_smtp_answers_are_judged_bounce_retry_or_failed() -> None:
    refused = aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@example.com")
    assert judge(aiosmtplib.SMTPRecipientsRefused([refused])).kind == "bounce"
    later = aiosmtplib.SMTPRecipientRefused(451, "try later", "a@example.com")
    assert judge(aiosmtplib.SMTPRecipientsRefused([later])).kind == "retry"
    assert judge(aiosmtplib.SMTPDataError(554, "spam")).kind == "bounce"
    assert judge(aiosmtplib.SMTPDataError(452, "full")).kind == "retry"
    assert judge(aiosmtplib.SMTPSenderRefused(553, "no", "f@acme.example")).kind == "failed"
    assert judge(aiosmtplib.SMTPServerDisconnected("gone")).kind == "retry"
    assert judge(ConnectionRefusedError(111, "refused")).kind == "retry"


def test_a_message_has_both_parts_and_one_click_unsubscribe() -> None:
    url = "https://paywatch.example/v1/email/unsubscribe?token=" + "x" * 200
    envelope = Envelope("billing@acme.example", "ada@example.com", "Acme", None, url, "em_1")
    msg = build_message(envelope, render("payment_failed", templates.BUILTIN["payment_failed"],
                                         SAMPLE))  # fmt: skip
    assert msg["List-Unsubscribe"] == f"<{url}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Message-ID"].endswith("@acme.example>")
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert f"List-Unsubscribe: <{url}>" in msg.as_string()
