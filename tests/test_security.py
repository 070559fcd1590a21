"""The app's defences from the security review (issue 14), each tried the way an attacker would.

docs/SECURITY.md names each defence and where it lives; the tests here follow its order.
"""

from __future__ import annotations

import pytest

from rate_limit import RateLimit, RateLimiter
from settings import SETTINGS, Config, ConfigError

# ---- settings: a secret's value is never shown ----------------------------------------------

SECRET_MARKER = "Pa55-Marker-never-shown"
SECRET_SETTINGS = [setting.name for setting in SETTINGS if setting.secret]
EXTERNAL = {
    "S3_BUCKET": "b-1",
    "AWS_ACCESS_KEY_ID": "AKIDSECURITYTEST0001",
    "AWS_SECRET_ACCESS_KEY": "security-test-secret",
    "AWS_REGION": "eu-west-1",
}
# Values a person might mistype, each carrying the marker where the secret part would be.
MISTYPED = [
    SECRET_MARKER,
    f"basci:alice:{SECRET_MARKER}",
    f"basic:{SECRET_MARKER}",
    f"basic::{SECRET_MARKER}",
    f"{SECRET_MARKER}:function",
    f"os:{SECRET_MARKER}",
    f" {SECRET_MARKER} ",
]


def test_the_secret_settings_are_the_credentials_and_the_login() -> None:
    assert SECRET_SETTINGS == ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "UPLOAD_AUTH"]


@pytest.mark.parametrize("name", SECRET_SETTINGS)
@pytest.mark.parametrize("value", MISTYPED)
def test_a_mistyped_secret_setting_never_shows_its_value_in_the_error(name, value) -> None:
    try:
        Config.from_env({**EXTERNAL, name: value}, None)
    except ConfigError as error:
        assert name in str(error)
        assert SECRET_MARKER not in str(error)


def test_secret_settings_have_no_default_to_show_in_the_help() -> None:
    assert [s.default for s in SETTINGS if s.secret] == [None] * len(SECRET_SETTINGS)


# ---- settings: a trusted proxy is one address -------------------------------------------------


def test_trusting_every_proxy_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError) as error:
        Config.from_env({"TRUSTED_PROXY": "*"}, None)
    assert str(error.value) == (
        "TRUSTED_PROXY=* would let every client choose its own address (and a fresh rate "
        "budget); name your proxy's address, e.g. 127.0.0.1."
    )


# ---- the rate limiter: a bounded table, least recently seen pushed out ----------------------


def test_rate_limiter_keeps_at_most_its_bound_of_clients_however_many_are_active() -> None:
    limiter = RateLimiter(RateLimit(30, 60), max_clients=100)
    for n in range(1_000):
        assert limiter.wait(f"198.51.100.{n}", 1000.0) == 0  # every one inside the window
    assert len(limiter.clients) == 100
    assert next(iter(limiter.clients)) == "198.51.100.900"


def test_rate_limiter_pushes_out_the_client_seen_longest_ago() -> None:
    limiter = RateLimiter(RateLimit(2, 60), max_clients=3)
    for client in ("a", "a", "b", "c"):
        limiter.wait(client, 1000.0)
    assert limiter.wait("a", 1001.0) == 59  # "a" is seen again: now the most recent
    limiter.wait("d", 1002.0)  # a fourth client pushes out "b", seen longest ago
    assert list(limiter.clients) == ["c", "a", "d"]
    assert limiter.wait("a", 1003.0) == 57  # still refused: its log survived
