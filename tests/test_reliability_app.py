"""The app against hostile input, abuse and load: never a 500, never a form outside the limits.

Fuzzing sends random and hostile query strings to /s3_credentials and bodies to /uploads through
WebTest; every 200 is decoded and checked against the limits, and by the local S3's own
verify_post_form, the check Amazon S3 applies. Abuse tests cover the signing endpoint (other
sites, rate limit, keys the client tries to choose, expiry, registration of keys we never issued)
and the UPLOAD_AUTH login hook. The load test sends 500 concurrent requests to the app under
waitress. `make stress` runs the same scenarios bigger (tests marked `stress`).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import re
import socket
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import webtest
from conftest import APP_NOW, WEBTEST_PORT, Clock, app_config, free_port, logged_in_owner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import local_s3
import media_types
import rate_limit
import server
import serving
import signer
import tokens
from settings import Config, ConfigError, read_upload_auth

SECRET = "RELIABILITY-APP-SECRET/u7Qx2Lr9Vb0NwKd3Hs8TmZ"
CREDENTIALS = signer.Credentials("AKIDRELIABILITYAPP01", SECRET)
KEYS = tokens.Secrets.derive(SECRET)
UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Our test bucket behind a closed port: a HEAD to S3 fails fast with 502."""
    return app_config(
        credentials=CREDENTIALS,
        endpoint="http://127.0.0.1:9",
        data_dir=tmp_path,
        s3_timeout=0.5,
        rate_limit=None,
    )


def app_client(config: Config, moment: datetime = APP_NOW) -> webtest.TestApp:
    app = server.create_app(config, clock=Clock(moment))
    return webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.7"})


def token_header(moment: datetime = APP_NOW) -> dict[str, str]:
    return {"X-Upload-Token": tokens.issue_page_token(KEYS, moment)}


def ask(client: webtest.TestApp, query: str, **headers: str) -> webtest.TestResponse:
    return client.get(
        f"/s3_credentials?{query}", headers={**token_header(), **headers}, expect_errors=True
    )


def form_query(**params: str) -> str:
    return urlencode(
        {"filename": "photo.jpg", "content_type": "image/jpeg", "size": "10", **params}
    )


def decoded_policy(form: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(form["fields"]["policy"], validate=True))


def assert_signed_within_limits(form: dict[str, Any], config: Config, now: datetime):
    """The whole promise of a 200: S3 would accept exactly this form, and nothing wider."""
    fields, policy = form["fields"], decoded_policy(form)
    s3 = local_s3.S3Config(Path("unused"), ("uploads",), {CREDENTIALS.access_key: SECRET})
    lowercased = {name.lower(): value for name, value in fields.items()}
    local_s3.verify_post_form(lowercased, "uploads", s3, now)
    assert local_s3.expand_filename(lowercased, "any name") == lowercased  # no ${filename}
    conditions = policy["conditions"]
    (size_range,) = [
        c for c in conditions if isinstance(c, list) and c[0] == "content-length-range"
    ]
    assert size_range == ["content-length-range", 1, config.max_bytes]
    date = f"{now:%Y/%m/%d}"
    key_shape = rf"{config.key_prefix}/{date}/{UUID4}(\.[a-z0-9]{{1,10}})?"
    assert re.fullmatch(key_shape, fields["key"]) and form["key"] == fields["key"]
    assert {"key": fields["key"]} in conditions and {"bucket": config.bucket} in conditions
    content_type = fields["Content-Type"]
    assert media_types.signable(content_type, config.allowed_types, config.allow_active_types)
    assert {"Content-Type": content_type} in conditions
    assert fields["key"].endswith(media_types.extension(content_type))
    if media_types.is_active(content_type):
        assert {"Content-Disposition": "attachment"} in conditions
    expiration = datetime.fromisoformat(policy["expiration"])
    assert now < expiration <= now + timedelta(seconds=config.policy_ttl)
    assert form["expires_at"] == expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert tokens.key_token_valid(KEYS, form["key"], form["token"], now)
    filename = fields["x-amz-meta-filename"]
    assert filename.isascii() and filename.isprintable() and len(filename) <= 1024


def assert_json_error(response: webtest.TestResponse, statuses: tuple[int, ...]) -> None:
    assert response.status_int in statuses, response.body[:300]
    assert response.content_type == "application/json"
    assert list(response.json) == ["error"] and response.json["error"].endswith(".")


# ---- fuzzing the signing endpoint --------------------------------------------------------------

HUGE = ["A" * 100_000, "9" * 5_000, "é" * 20_000, "../" * 3_000 + "x.jpg", "\x00" * 1_000]
hostile_text = (
    st.text(max_size=80)
    | st.text(st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Co"]), max_size=40)
    | st.sampled_from(HUGE)
    | st.sampled_from(["1.5", "1e3", "-1", "0x10", "true", "[]", "{}", "null", " 7 ", "१२३"])
    | st.sampled_from(["${filename}", "../../etc/passwd", "a/b\\c.jpg", "x.jpg\x00.php"])
    | st.sampled_from(["image/png", "IMAGE/PNG", "image/svg+xml", "text/html", "image/*", "*/*"])
)
names = st.sampled_from(["filename", "content_type", "size", "key", "bucket", "policy", "size[]"])
query_pairs = st.lists(st.tuples(names | st.text(max_size=10), hostile_text), max_size=8)
raw_bytes_query = st.binary(max_size=200).map(
    lambda raw: "filename=" + "".join(f"%{byte:02X}" for byte in raw) + "&" + form_query()
)


def encoded(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(name)}={quote(value)}" for name, value in pairs)


def check_signing_answer(response: webtest.TestResponse, config: Config) -> None:
    if response.status_int == 200:
        assert_signed_within_limits(response.json, config, APP_NOW)
    else:
        assert_json_error(response, (400, 413, 415))


@FUZZ
@given(query=query_pairs.map(encoded) | raw_bytes_query)
def test_hostile_signing_requests_get_a_json_error_or_a_form_inside_the_limits(
    client, config, query
):
    check_signing_answer(ask(client, query), config)


@FUZZ
@given(
    pairs=st.lists(st.tuples(st.sampled_from(["filename", "content_type", "size"]), hostile_text)),
    base=st.sampled_from(["photo.jpg", "a.pdf", "notes.txt"]),
)
def test_repeated_and_hostile_parameters_never_widen_the_form(client, config, pairs, base):
    query = encoded(pairs) + "&" + form_query(filename=base)
    check_signing_answer(ask(client, query), config)


STRESS = settings(max_examples=5_000, deadline=None)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, webtest.TestApp]:
    """One app for thousands of stress examples (a function-scoped one is not reset per example)."""
    config = app_config(
        credentials=CREDENTIALS, endpoint="http://127.0.0.1:9",
        data_dir=tmp_path_factory.mktemp("stress"), s3_timeout=0.5, rate_limit=None,
    )  # fmt: skip
    return config, app_client(config)


@pytest.mark.stress
@STRESS
@given(query=query_pairs.map(encoded) | raw_bytes_query)
def test_stress_hostile_signing_requests(shared, query):
    config, client = shared
    check_signing_answer(ask(client, query), config)


latin1_text = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=60)
HEADER_NAMES = ["Origin", "Sec-Fetch-Site", "X-Upload-Token", "Authorization", "Host"]
HEADER_NAMES += ["X-Forwarded-Host", "X-Forwarded-Proto", "Cookie", "Content-Type"]
header_names = st.sampled_from(HEADER_NAMES)
ENDPOINTS = [
    ("GET", "/"),
    ("GET", f"/s3_credentials?{form_query()}"),
    ("POST", "/uploads"),
    ("GET", "/uploads"),
    ("GET", "/uploads/done?bucket=uploads&key=k&etag=e&token=t"),
]


@FUZZ
@given(
    headers=st.dictionaries(header_names, latin1_text, max_size=6),
    endpoint=st.sampled_from(ENDPOINTS),
    login=st.booleans(),
)
def test_hostile_headers_never_cause_a_500(config, headers, endpoint, login):
    """Header values are Latin-1 bytes the client chooses; none may crash any endpoint."""
    check_hostile_headers(config, headers, endpoint, login)


@pytest.mark.stress
@STRESS
@given(
    headers=st.dictionaries(header_names, latin1_text, max_size=6),
    endpoint=st.sampled_from(ENDPOINTS),
    login=st.booleans(),
)
def test_stress_hostile_headers(shared, headers, endpoint, login):
    check_hostile_headers(shared[0], headers, endpoint, login)


def check_hostile_headers(config, headers, endpoint, login):
    auth = read_upload_auth("UPLOAD_AUTH", "basic:alice:correct-horse") if login else None
    client = app_client(dataclasses.replace(config, auth=auth))
    method, path = endpoint
    body = b'{"key": "k", "etag": "e", "token": "t"}' if method == "POST" else None
    sent = {**token_header(), "Content-Type": "application/json", **headers}
    response = client.request(path, method=method, headers=sent, body=body, expect_errors=True)
    if response.status_int not in (200, 303):
        assert_json_error(response, (400, 401, 403, 404, 421, 502))  # 502: the list needs S3


# ---- fuzzing upload registration ---------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=10,
)
issued_key = st.builds(
    lambda tail: f"uploads/2026/12/02/{tail}", st.text(max_size=40) | st.sampled_from(HUGE)
)


def registration(key: str, etag: Any, token_ok: bool, extra: dict) -> bytes:
    token = tokens.key_token(KEYS, key, APP_NOW) if token_ok else "0" * 64
    return json.dumps({"key": key, "etag": etag, "token": token, **extra}).encode()


registration_bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda value: json.dumps(value).encode())
    | st.dictionaries(st.sampled_from(["key", "etag", "token"]), json_values).map(
        lambda value: json.dumps(value).encode()
    )
    | st.builds(
        registration,
        issued_key,
        json_values,
        st.booleans(),
        st.dictionaries(st.text(), json_values),
    )
    | st.sampled_from([b"{" * 5_000, b'{"key": "' + b"k" * 5_000 + b'"}', b"\xff\xfe{}", b""])
    | st.sampled_from([b"[" * 4_000, b'{"key": ' + b"[" * 3_000])
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/jsonx"]
)


@FUZZ
@given(body=registration_bodies, content_type=content_types)
def test_hostile_registration_bodies_get_a_json_error_never_a_500(client, body, content_type):
    check_registration(client, body, content_type)


@pytest.mark.stress
@STRESS
@given(body=registration_bodies, content_type=content_types)
def test_stress_hostile_registration_bodies(shared, body, content_type):
    check_registration(shared[1], body, content_type)


def check_registration(client: webtest.TestApp, body: bytes, content_type: str) -> None:
    headers = {**token_header(), "Content-Type": content_type}
    response = client.post("/uploads", body, headers=headers, expect_errors=True)
    # 502: a body naming an issued key gets as far as asking S3, which is down here.
    assert_json_error(response, (400, 403, 413, 502))


# ---- abuse: other sites, rate limits -----------------------------------------------------------

CROSS_SITE = {"Sec-Fetch-Site": "cross-site"}


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/s3_credentials"), ("POST", "/uploads")], ids=["sign", "record"]
)
@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (CROSS_SITE, "Cross-site requests may not use this endpoint."),
        (
            {"Origin": "https://evil.example"},
            "Requests from other origins may not use this endpoint.",
        ),
        (
            {"X-Upload-Token": ""},
            "The X-Upload-Token header is missing or expired; reload the page.",
        ),
        (
            {"X-Upload-Token": tokens.issue_page_token(tokens.Secrets.derive("other"), APP_NOW)},
            "The X-Upload-Token header is missing or expired; reload the page.",
        ),
        (
            token_header(APP_NOW + timedelta(minutes=2)),
            "The X-Upload-Token header is missing or expired; reload the page.",
        ),
    ],
    ids=["fetch-metadata", "origin", "no-token", "another-servers-token", "token-from-the-future"],
)
def test_other_sites_are_refused_on_both_endpoints(client, method, path, headers, message):
    sent = {**token_header(), "Content-Type": "application/json", **headers}
    body = (
        json.dumps({"key": "k", "etag": "e", "token": "t"}).encode() if method == "POST" else None
    )
    response = client.request(
        f"{path}?{form_query()}", method=method, headers=sent, body=body, expect_errors=True
    )
    assert (response.status_int, response.json) == (403, {"error": message})


def limited_client(tmp_path: Path, limit: str) -> webtest.TestApp:
    environ = {
        "S3_BUCKET": "uploads",
        "AWS_ACCESS_KEY_ID": CREDENTIALS.access_key,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "UPLOAD_RATE_LIMIT": limit,
        "DATA_DIR": str(tmp_path),
        "PORT": str(WEBTEST_PORT),
    }
    return app_client(Config.from_env(environ, None))


def status_of(client: webtest.TestApp, address: str, **headers: str) -> int:
    extra = {"REMOTE_ADDR": address}
    response = client.get(
        f"/s3_credentials?{form_query()}",
        headers={**token_header(), **headers},
        extra_environ=extra,
        expect_errors=True,
    )
    return response.status_int


def test_rate_limit_comes_from_the_setting_and_is_per_client(tmp_path):
    client = limited_client(tmp_path, "3/minute")
    assert [status_of(client, "198.51.100.1") for _ in range(4)] == [200, 200, 200, 429]
    assert status_of(client, "198.51.100.2") == 200


def test_rate_limited_answer_says_when_to_retry(tmp_path):
    client = limited_client(tmp_path, "1/hour")
    status_of(client, "198.51.100.1")
    response = client.get(
        f"/s3_credentials?{form_query()}",
        headers=token_header(),
        extra_environ={"REMOTE_ADDR": "198.51.100.1"},
        status=429,
    )
    assert response.json == {"error": "Too many upload requests; wait and try again."}
    assert response.headers["Retry-After"] == "3600"


def test_forwarded_headers_do_not_buy_a_new_rate_budget(tmp_path):
    """X-Forwarded-For is the client's to write: the limit counts the connection's address."""
    client = limited_client(tmp_path, "2/minute")
    answers = [
        status_of(client, "198.51.100.1", **{"X-Forwarded-For": f"203.0.113.{n}"}) for n in range(4)
    ]
    assert answers == [200, 200, 429, 429]


def test_refused_cross_site_requests_spend_no_rate_budget(tmp_path):
    client = limited_client(tmp_path, "2/minute")
    for _ in range(5):
        assert status_of(client, "198.51.100.1", **CROSS_SITE) == 403
    assert [status_of(client, "198.51.100.1") for _ in range(3)] == [200, 200, 429]


# ---- behind a reverse proxy: waitress, configured by server.waitress_options --------------------


PUBLIC = "uploads.example.test"  # the host name the proxy serves the app as


@contextlib.contextmanager
def served_behind(tmp_path: Path, trusted_proxy: str | None) -> Iterator[str]:
    """The app under waitress as `serve` configures it, with a limit of 2 forms a minute."""
    environ = {
        "S3_BUCKET": "uploads",
        "AWS_ACCESS_KEY_ID": CREDENTIALS.access_key,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "UPLOAD_RATE_LIMIT": "2/minute",
        "DATA_DIR": str(tmp_path),
        **({"TRUSTED_PROXY": trusted_proxy} if trusted_proxy else {}),
    }
    config = Config.from_env({**environ, "PORT": str(free_port()), "PUBLIC_HOST": PUBLIC}, None)
    app = server.create_app(config, clock=Clock(APP_NOW))
    options = serving.waitress_options(config.threads, config.trusted_proxy)
    channel = serving.QuietChannel
    with serving.BackgroundServer(app, port=config.port, channel_class=channel, **options) as http:
        yield http.url.removeprefix("http://")


def status_through(address: str, **headers: str) -> int:
    connection = http.client.HTTPConnection(address, timeout=10)
    try:
        sent = {**token_header(), **headers}
        connection.request("GET", f"/s3_credentials?{form_query()}", headers=sent)
        return connection.getresponse().status
    finally:
        connection.close()


def forwarded_for(client: str) -> dict[str, str]:
    return {"X-Forwarded-For": client}


def test_behind_a_trusted_proxy_the_rate_limit_counts_each_forwarded_client(tmp_path):
    with served_behind(tmp_path, "127.0.0.1") as address:
        first = [status_through(address, **forwarded_for("203.0.113.1")) for _ in range(3)]
        second = status_through(address, **forwarded_for("203.0.113.2"))
        spoofed = status_through(address, **forwarded_for("203.0.113.9, 203.0.113.1"))
    assert (first, second, spoofed) == ([200, 200, 429], 200, 429)


def test_without_a_trusted_proxy_waitress_drops_forwarded_for(tmp_path):
    with served_behind(tmp_path, None) as address:
        answers = [status_through(address, **forwarded_for(f"203.0.113.{n}")) for n in range(3)]
    assert answers == [200, 200, 429]


def test_a_proxy_that_is_not_the_trusted_one_cannot_name_the_client(tmp_path):
    with served_behind(tmp_path, "192.0.2.50") as address:
        answers = [status_through(address, **forwarded_for(f"203.0.113.{n}")) for n in range(3)]
    assert answers == [200, 200, 429]


TLS_PROXY = {
    "Origin": f"https://{PUBLIC}",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": PUBLIC,
    "X-Forwarded-For": "203.0.113.1",
}


def test_behind_a_trusted_tls_proxy_the_https_page_may_ask_for_forms(tmp_path):
    with served_behind(tmp_path, "127.0.0.1") as address:
        assert status_through(address, **TLS_PROXY) == 200


def test_forwarded_scheme_and_host_from_an_untrusted_peer_do_not_pass_the_origin_check(tmp_path):
    with served_behind(tmp_path, None) as address:
        assert status_through(address, **TLS_PROXY) == 403


@pytest.mark.parametrize("value", ["proxy.internal", "127.0.0.1/8", "not an address"])
def test_trusted_proxy_must_be_an_ip_address(value):
    environ = {"TRUSTED_PROXY": value}
    with pytest.raises(ConfigError, match=r"^TRUSTED_PROXY .* is not an IP address"):
        Config.from_env(environ, None)


# ---- abuse: the client never chooses the key ---------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    [
        "../../etc/passwd",
        "..\\..\\boot.ini",
        "/absolute/path.jpg",
        "uploads/2026/12/02/someone-elses.jpg",
        "${filename}",
        "${filename}.jpg",
        "photo.jpg\x00.php",
        "photo.${filename}",
        "%2e%2e%2fescape.jpg",
        "\u202egpj.exe",
    ],
)
def test_filename_never_becomes_part_of_the_key(client, config, filename):
    response = ask(client, form_query(filename=filename, key="uploads/chosen.jpg"))
    assert response.status_int == 200
    form = response.json
    assert_signed_within_limits(form, config, APP_NOW)
    stem = form["key"].rsplit("/", 1)[1].split(".")[0]
    assert re.fullmatch(UUID4, stem) and "${" not in json.dumps(form["fields"]["key"])


def test_the_same_filename_twice_gets_two_different_keys(client):
    first, second = (ask(client, form_query()).json["key"] for _ in range(2))
    assert first != second


@pytest.fixture
def s3_clock() -> Clock:
    return Clock(APP_NOW)


@pytest.fixture
def s3(tmp_path: Path, s3_clock: Clock) -> Iterator[str]:
    """The URL forms post to: a real local S3 trusting the app's credentials, on a clock the
    test moves."""
    s3_config = local_s3.S3Config(
        data_dir=tmp_path / "s3",
        buckets=("uploads",),
        credentials={CREDENTIALS.access_key: SECRET},
        clock=s3_clock,
    )
    with local_s3.LocalS3(s3_config) as running:
        yield f"{running.url}/uploads/"


def s3_answer(body: bytes, *names: str) -> tuple[str, ...]:
    """Fields of S3's XML answer: ("Code", "Message") of an <Error>, "Key" of a PostResponse."""
    answer = ET.fromstring(body)
    return tuple(answer.findtext(name) for name in names)


def test_a_form_cannot_write_another_key(client, s3, post_form):
    mine, theirs = (ask(client, form_query()).json for _ in range(2))
    assert post_form(s3, theirs["fields"], b"theirs")[0] == 201
    hijack = {**mine["fields"], "key": theirs["key"]}
    status, _, body = post_form(s3, hijack, b"overwritten")
    assert status == 403
    code, message = s3_answer(body, "Code", "Message")
    assert code == "AccessDenied"
    assert message == (
        f'Invalid according to Policy: Policy Condition failed: ["eq", "$key", "{mine["key"]}"]'
    )


def test_filename_variable_in_the_uploaded_name_changes_nothing(client, s3, post_form):
    form = ask(client, form_query(filename="${filename}.jpg")).json
    status, _, body = post_form(s3, form["fields"], b"\xff\xd8 bytes", filename="${filename}.jpg")
    assert status == 201
    assert s3_answer(body, "Key") == (form["key"],)


@pytest.mark.parametrize("ttl", [1, 60, 3600])
def test_policy_expires_exactly_after_the_configured_ttl(tmp_path, s3, s3_clock, post_form, ttl):
    config = app_config(credentials=CREDENTIALS, data_dir=tmp_path, policy_ttl=ttl, rate_limit=None)
    form = ask(app_client(config), form_query()).json
    assert (
        decoded_policy(form)["expiration"]
        == f"{APP_NOW + timedelta(seconds=ttl):%Y-%m-%dT%H:%M:%S}.000Z"
    )
    s3_clock.moment = APP_NOW + timedelta(seconds=ttl)
    status, _, body = post_form(s3, form["fields"], b"late")
    assert (status, s3_answer(body, "Code", "Message")) == (
        403,
        ("AccessDenied", "Invalid according to Policy: Policy expired."),
    )
    s3_clock.moment = APP_NOW + timedelta(seconds=ttl - 1)
    assert post_form(s3, form["fields"], b"in time")[0] == 201


NOT_ISSUED = "This key was not issued by this server."


@pytest.mark.parametrize(
    ("key", "token"),
    [
        ("uploads/2026/12/02/mine.jpg", "0" * 64),
        ("uploads/2026/12/02/mine.jpg", ""),
        (
            "uploads/2026/12/02/mine.jpg",
            tokens.key_token(KEYS, "uploads/2026/12/02/other.jpg", APP_NOW),
        ),
        (
            "uploads/2026/12/02/mine.jpg",
            tokens.key_token(
                tokens.Secrets.derive("another server"), "uploads/2026/12/02/mine.jpg", APP_NOW
            ),
        ),
        (
            "uploads/2026/12/02/mine.jpg",
            tokens.key_token(KEYS, "uploads/2026/12/02/mine.jpg", APP_NOW - timedelta(days=8)),
        ),
        (
            "uploads/2026/12/02/mine.jpg",
            tokens.key_token(KEYS, "uploads/2026/12/02/mine.jpg", APP_NOW + timedelta(hours=1)),
        ),
        (
            "uploads/2026/12/02/mine.jpg",
            tokens.key_token(KEYS, "uploads/2026/12/02/mine.jpg", APP_NOW).upper(),
        ),
        (
            "../uploads/2026/12/02/mine.jpg",
            tokens.key_token(KEYS, "uploads/2026/12/02/mine.jpg", APP_NOW),
        ),
        ("uploads/2026/12/02/mine.jpg", "é" * 64),
    ],
    ids=[
        "zeros",
        "empty",
        "other-key",
        "other-server",
        "expired",
        "from-the-future",
        "uppercase",
        "traversal",
        "non-ascii",
    ],
)
def test_registration_needs_a_key_this_server_issued(client, key, token):
    body = {"key": key, "etag": '"d41d8cd98f00b204e9800998ecf8427e"', "token": token}
    response = client.post_json("/uploads", body, headers=token_header(), status=403)
    assert response.json == {"error": NOT_ISSUED}


def test_no_js_registration_needs_a_key_this_server_issued(client):
    query = {"bucket": "uploads", "key": "uploads/x", "etag": '"e"', "token": "f" * 64}
    response = client.get("/uploads/done", query, status=303)
    assert response.location.endswith("/?error=403")


@pytest.mark.parametrize("host", ["evil.example", "[", "\x1f", "app.test:99999999"])
def test_no_js_redirect_is_never_sent_for_a_host_that_is_not_ours(client, host):
    query = {"bucket": "uploads", "key": "uploads/x", "etag": '"e"', "token": "f" * 64}
    response = client.get("/uploads/done", query, headers={"Host": host}, status=421)
    assert "Location" not in response.headers
    assert_json_error(response, (421,))


# ---- UPLOAD_AUTH: the site's own login before any form -----------------------------------------

PROTECTED = [("GET", "/"), ("GET", "/s3_credentials"), ("GET", "/uploads"), ("POST", "/uploads")]
PROTECTED += [("GET", "/uploads/done"), ("POST", "/uploads/links"), ("POST", "/multipart")]
PROTECTED += [("POST", f"/multipart/{step}") for step in ("urls", "parts", "complete", "abort")]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def basic_client(config: Config) -> webtest.TestApp:
    auth = read_upload_auth("UPLOAD_AUTH", "basic:alice:correct horse:battery")
    return app_client(dataclasses.replace(config, auth=auth))


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("alice", "wrong"),
        basic("bob", "correct horse:battery"),
        basic("alice", "correct horse"),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic \xe9t\xe9"},
        {"Authorization": "Bearer correct horse:battery"},
    ],
    ids=["none", "wrong-password", "wrong-user", "cut-password", "garbage", "latin-1", "scheme"],
)
def test_basic_auth_refuses_everything_that_shows_signs_or_records(
    basic_client, method, path, headers
):
    response = basic_client.request(path, method=method, headers=headers, expect_errors=True)
    assert (response.status_int, response.json) == (401, {"error": "Log in to upload files."})
    assert response.headers["WWW-Authenticate"] == 'Basic realm="uploads", charset="UTF-8"'


def test_basic_auth_lets_the_right_user_get_the_page_and_a_form(basic_client, config):
    login = basic("alice", "correct horse:battery")
    assert basic_client.get("/", headers=login).status_int == 200
    response = basic_client.get(
        f"/s3_credentials?{form_query()}", headers={**login, **token_header()}
    )
    assert_signed_within_limits(response.json, config, APP_NOW)


def test_static_files_and_health_stay_open_behind_basic_auth(basic_client):
    assert basic_client.get("/healthz").json["status"] == "ok"
    assert basic_client.get("/static/upload.js").status_int == 200


def test_basic_auth_password_never_shows_in_the_config():
    config = Config.from_env(
        {"UPLOAD_AUTH": "basic:alice:s3cret-pass-phrase", "UPLOAD_RATE_LIMIT": "off"}, None
    )
    assert "s3cret-pass-phrase" not in repr(config) and "alice" not in repr(config)


HOOK_MODULE = """
def logged_in(request):
    return request.get_cookie("session") == "valid"


def broken(request):
    raise RuntimeError("session store down")


not_callable = 42
"""


@pytest.fixture
def hook_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A site's login check, importable as `site_login` (a fresh name for each test)."""
    name = f"site_login_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(HOOK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def hook_client(config: Config, setting: str) -> webtest.TestApp:
    return app_client(dataclasses.replace(config, auth=read_upload_auth("UPLOAD_AUTH", setting)))


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_a_site_login_function_guards_everything(config, hook_module, method, path):
    client = hook_client(config, f"{hook_module}:logged_in")
    response = client.request(path, method=method, expect_errors=True)
    expected = {"error": "Log in to this site before uploading files."}
    assert (response.status_int, response.json) == (403, expected)
    assert "WWW-Authenticate" not in response.headers


def test_a_site_login_function_lets_logged_in_users_through(config, hook_module):
    client = hook_client(config, f"{hook_module}:logged_in")
    client.set_cookie("session", "valid")
    assert client.get("/").status_int == 200
    response = client.get(f"/s3_credentials?{form_query()}", headers=token_header())
    assert_signed_within_limits(response.json, config, APP_NOW)


def test_a_failing_login_function_refuses_and_logs(config, hook_module, caplog):
    client = hook_client(config, f"{hook_module}:broken")
    response = client.get("/", status=403)
    assert response.json == {"error": "Log in to this site before uploading files."}
    assert "session store down" in caplog.text


@pytest.mark.parametrize(
    "setting",
    ["basic:", "basic:alice", "basic::pw", "basic:alice:", "no_such_module_xyz:f", "os", "os:sep"],
)
def test_upload_auth_that_cannot_work_stops_start_up(setting):
    with pytest.raises(ConfigError, match="UPLOAD_AUTH"):
        Config.from_env({"UPLOAD_AUTH": setting}, None)


def test_upload_auth_function_is_read_from_the_environment(hook_module):
    config = Config.from_env({"UPLOAD_AUTH": f"{hook_module}:logged_in"}, None)
    assert config.auth.__name__ == "logged_in"


def test_help_and_readme_explain_upload_auth(capsys, tmp_path, monkeypatch):
    with pytest.raises(SystemExit):
        server.main(["--help"])
    assert "UPLOAD_AUTH" in capsys.readouterr().out
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    settings = re.findall(r"^UPLOAD_AUTH=(\S+) make run", readme, re.MULTILINE)
    assert settings == ["basic:alice:a-long-passphrase", "mysite.auth:logged_in"]
    (tmp_path / "mysite").mkdir()
    (tmp_path / "mysite" / "auth.py").write_text("def logged_in(request):\n    return False\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for setting in settings:
        assert callable(Config.from_env({"UPLOAD_AUTH": setting}, None).auth)
    for name in ("mysite", "mysite.auth"):
        sys.modules.pop(name, None)


# ---- S3 down or slow: the app answers within its timeout ---------------------------------------


# How long each fake S3 below holds a request: three times the app's S3_TIMEOUT of 1 s.
HOLD = 3


@contextlib.contextmanager
def fake_s3(answer) -> Iterator[tuple[str, threading.Event]]:
    """A loopback server calling answer(connection, stop) for each connection, until the block
    ends; the event is set once an answer has finished holding its request."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop, finished = threading.Event(), threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                connection, _ = listener.accept()
                with connection:
                    connection.recv(65536)
                    answer(connection, stop)
                    finished.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", finished
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=10)


def late(connection: socket.socket, stop: threading.Event) -> None:
    """A whole, valid answer, too late."""
    stop.wait(HOLD)
    with contextlib.suppress(OSError):
        connection.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "e"\r\n\r\n')


def drip(connection: socket.socket, stop: threading.Event) -> None:
    """A status line, then one header byte every 0.2 s: each read succeeds, none finishes."""
    connection.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    for _ in range(HOLD * 5):
        if stop.wait(0.2):
            return
        with contextlib.suppress(OSError):
            connection.sendall(b"a")


def silent(connection: socket.socket, stop: threading.Event) -> None:
    stop.wait(HOLD)


@pytest.mark.parametrize("answer", [late, drip, silent])
def test_a_slow_s3_gets_a_clear_504_before_s3_answers(config, answer):
    """The deadline bounds the whole exchange: the app gives up while S3 still holds the
    request (a late answer would have been a 201; a finished drip, a 502)."""
    with fake_s3(answer) as (endpoint, finished):
        client = app_client(dataclasses.replace(config, endpoint=endpoint, s3_timeout=1))
        body = {
            "key": "uploads/k",
            "etag": '"e"',
            "token": tokens.key_token(KEYS, "uploads/k", APP_NOW),
        }
        response = client.post_json("/uploads", body, headers=token_header(), status=504)
        s3_still_holding = not finished.is_set()
    assert response.json == {"error": "S3 did not answer in time; try again."}
    assert s3_still_holding


def test_s3_down_is_a_clear_502_without_waiting_for_the_timeout(config):
    """Refused at once: not the 504 the app answers once S3_TIMEOUT has passed."""
    body = {
        "key": "uploads/k",
        "etag": '"e"',
        "token": tokens.key_token(KEYS, "uploads/k", APP_NOW),
    }
    response = app_client(config).post_json("/uploads", body, headers=token_header(), status=502)
    assert response.json == {"error": "S3 could not be reached to check the upload."}


# ---- a full disk on the app's side ------------------------------------------------------------


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as file:
        while True:
            file.write(b"\0" * 65536)
            file.flush()
    return filler


def test_a_bucket_too_full_for_the_upload_list_is_a_503_and_a_retry_records_it(
    tiny_disk, post_form
):
    """The list lives in the bucket: when S3 cannot store a record, the file is still safe in
    S3, the browser is told to try again, and the retry records it."""
    s3_config = local_s3.S3Config(
        tiny_disk("2m"), ("uploads",), {CREDENTIALS.access_key: SECRET}, cors_origins=("*",)
    )
    with local_s3.LocalS3(s3_config) as s3:
        config, login = logged_in_owner(
            app_config(credentials=CREDENTIALS, endpoint=s3.url, rate_limit=None)
        )
        client = webtest.TestApp(server.create_app(config), extra_environ=login)  # real clock
        headers = token_header(datetime.now(UTC))
        form = client.get(f"/s3_credentials?{form_query()}", headers=headers).json
        assert post_form(form["url"], form["fields"], b"0123456789")[0] == 201
        report = {"key": form["key"], "etag": "781e5e245d69b566979b86e28d23f2c7"}
        report["token"] = form["token"]
        filler = fill(s3_config.data_dir)
        refused = client.post_json("/uploads", report, headers=headers, status=503)
        assert refused.json == {"error": "The file is in S3 but could not be recorded; try again."}
        filler.unlink()
        assert client.post_json("/uploads", report, headers=headers).status_int == 201
        assert [upload["key"] for upload in client.get("/uploads").json["uploads"]] == [form["key"]]


# ---- load: 500 concurrent requests to the app under waitress -----------------------------------


def concurrent_requests(address: str, count: int) -> list[tuple[int, dict, bytes] | Exception]:
    """`count` threads released at once, each one GET /s3_credentials on its own connection."""
    start = threading.Barrier(count)
    answers: list[Any] = [None] * count

    def one(index: int) -> None:
        start.wait()
        connection = http.client.HTTPConnection(address, timeout=60)
        try:
            connection.request("GET", f"/s3_credentials?{form_query()}", headers=token_header())
            reply = connection.getresponse()
            answers[index] = (reply.status, dict(reply.getheaders()), reply.read())
        except Exception as error:
            answers[index] = error
        finally:
            connection.close()

    workers = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return answers


def run_load(served, config: Config, count: int, waves: int = 1) -> dict[str, int]:
    """`waves` rounds of `count` concurrent requests (client and server share this process's
    1024 descriptors that waitress's select() can watch, so one wave stays well under that)."""
    answers = []
    config = dataclasses.replace(config, port=free_port())
    with served(
        server.create_app(config, clock=Clock(APP_NOW)), threads=8, port=config.port
    ) as url:
        address = url.removeprefix("http://")
        started = time.monotonic()
        for _ in range(waves):
            answers += concurrent_requests(address, count)
        elapsed = time.monotonic() - started
    failed = [answer for answer in answers if isinstance(answer, Exception)]
    assert failed == []
    keys = set()
    for status, headers, body in answers:
        assert status in (200, 429), body[:200]
        if status == 200:
            form = json.loads(body)
            assert_signed_within_limits(form, config, APP_NOW)
            keys.add(form["key"])
        else:
            assert json.loads(body) == {"error": "Too many upload requests; wait and try again."}
            assert int(headers["Retry-After"]) >= 1
    statuses = [answer[0] for answer in answers]
    print(
        f"\n{waves} x {count} concurrent requests in {elapsed:.2f} s: {statuses.count(200)} x 200, "
        f"{statuses.count(429)} x 429, 0 failed"
    )
    assert len(keys) == statuses.count(200)
    return {status: statuses.count(status) for status in (200, 429)}


@pytest.mark.parametrize("count", [500])
def test_concurrent_signing_requests_are_all_answered_correctly_or_rate_limited(
    served, config, count
):
    limited = dataclasses.replace(config, rate_limit=rate_limit.RateLimit(30, 60))
    assert run_load(served, limited, count) == {200: 30, 429: count - 30}
    assert run_load(served, config, count) == {200: count, 429: 0}


@pytest.mark.stress
def test_stress_ten_waves_of_500_concurrent_signing_requests(served, config):
    limited = dataclasses.replace(config, rate_limit=rate_limit.RateLimit(2000, 3600))
    assert run_load(served, limited, 500, waves=10) == {200: 2000, 429: 3000}
    assert run_load(served, config, 500, waves=10) == {200: 5000, 429: 0}
