"""Key expiry and rotation grace durations: `90d`, `12h`, `30m`, `45s`, and nothing else.

The CLI (`--expires-in`, `--grace`) parses them with api_keys.parse_duration and the admin
API's body with the published pattern; both must take exactly the same strings, so a value
the OpenAPI document allows is never refused and a typo is never guessed at.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from paywatch.api.query.schemas_apikeys import Duration
from paywatch.errors import ConfigError
from paywatch.tenants.api_keys import parse_duration

_API = TypeAdapter(Duration)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("1s", timedelta(seconds=1)),
        ("999999d", timedelta(days=999999)),
        ("100m", timedelta(minutes=100)),
    ],
)
def test_a_whole_number_and_one_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert _API.validate_python(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "90",  # no unit: days? seconds? never guessed
        "d",
        "0d",  # an already expired key, or no grace at all: say nothing instead
        "0s",
        "07d",  # leading zero
        "1.5h",
        "1h30m",
        "-1d",
        "+1d",
        " 90d",
        "90d ",
        "90 d",
        "90d\n",
        "90D",
        "90w",
        "90days",
        "1000000d",  # past 999999
        "\u0663d",  # an Arabic-Indic three: int() reads it, the pattern does not
        "9\x00d",
    ],
)
def test_anything_else_is_a_config_error_that_shows_the_form(text: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid duration .*e\.g\. 90d, 12h, 30m"):
        parse_duration(text)
    with pytest.raises(ValidationError):
        _API.validate_python(text)


@given(st.one_of(st.text(max_size=9), st.from_regex(r"[0-9]{1,7}[smhdSMHDw]?", fullmatch=True)))
def test_the_cli_and_the_api_take_the_same_strings(text: str) -> None:
    try:
        parse_duration(text)
        cli = True
    except ConfigError:
        cli = False
    try:
        _API.validate_python(text)
        api = True
    except ValidationError:
        api = False
    assert cli == api, text
