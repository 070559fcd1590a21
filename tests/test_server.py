"""The app through its WSGI interface (WebTest), with a fixed clock and a real local S3."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import http.client
import importlib.metadata
import json
import logging
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import bs4
import pytest
import webtest
from conftest import APP_NOW, APP_SECRET, Clock, free_port, logged_in_owner, page_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import file_types
import filenames
import local_s3
import media_types
import page_data
import rate_limit
import registry
import s3_client
import server
import serving
import signer
import tokens
from settings import SETTINGS, Config, ConfigError, markdown_table

UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
TIB5 = 5 * 2**40  # S3's largest object: 5 TiB, in parts
SAFE_IMAGES = [t for t in media_types.SAFE_TYPES if t.startswith("image/")]
KEY_FORMAT = re.compile(rf"uploads/[0-9]{{4}}/[0-9]{{2}}/[0-9]{{2}}/{UUID4}(\.[a-z0-9]{{1,10}})?")


@pytest.fixture
def app(config: Config, clock: Clock):
    """Every request of this module also goes through the access log, which the leak scan reads."""
    return serving.access_log(server.create_app(config, clock=clock))


@pytest.fixture
def unlimited(config: Config, clock: Clock) -> webtest.TestApp:
    """The app with the rate limit off, for tests that send many requests."""
    return app_client(dataclasses.replace(config, rate_limit=None), clock)


def app_client(config: Config, clock: Clock | None = None) -> webtest.TestApp:
    app = serving.access_log(server.create_app(config, clock=clock))
    return webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.1"})


def owner_client(config: Config, clock: Clock | None = None) -> webtest.TestApp:
    """The app behind UPLOAD_AUTH, its owner logged in: they may list every upload."""
    config, login = logged_in_owner(config)
    app = serving.access_log(server.create_app(config, clock=clock))
    return webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.1", **login})


def page_token(client: webtest.TestApp) -> str:
    """The token the page hands its script, as the script reads it. The page is read from
    another address: it signs a form too, which would spend the asking client's rate budget."""
    page = client.get("/", extra_environ={"REMOTE_ADDR": "198.51.100.254"})
    return page_config(page.text)["pageToken"]


def ask_for_form(client: webtest.TestApp, status: int = 200, **params):
    query = {"filename": "photo.jpg", "content_type": "image/jpeg", "size": "1234", **params}
    headers = {"X-Upload-Token": page_token(client)}
    return client.get("/s3_credentials", query, headers=headers, status=status)


# ---- configuration ---------------------------------------------------------------------------

EXTERNAL = {
    "S3_BUCKET": "my-bucket",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": APP_SECRET,
    "AWS_REGION": "eu-west-1",
}


def test_config_defaults_to_the_embedded_s3_with_safe_limits() -> None:
    config = Config.from_env({}, None)
    assert (config.bucket, config.credentials) == (None, None)
    assert config.max_bytes == 10 * 1024 * 1024
    assert config.allowed_types == ("image/*", "application/pdf", "text/plain")
    assert (config.key_prefix, config.policy_ttl, config.acl) == ("uploads", 300, None)
    assert config.rate_limit == rate_limit.RateLimit(30, 60)
    assert (config.host, config.port, config.s3_port) == ("127.0.0.1", 8080, 9000)


def test_config_reads_an_external_bucket_and_its_credentials() -> None:
    environ = {
        **EXTERNAL,
        "AWS_ENDPOINT_URL_S3": "https://minio.example:9000/",
        "S3_ACL": "private",
    }
    config = Config.from_env(environ, None)
    assert (config.bucket, config.region, config.acl) == ("my-bucket", "eu-west-1", "private")
    assert config.credentials == signer.Credentials("AKIDEXAMPLE", APP_SECRET)
    assert config.endpoint == "https://minio.example:9000"


def test_config_falls_back_to_aws_default_region() -> None:
    environ = {**EXTERNAL, "AWS_REGION": "", "AWS_DEFAULT_REGION": "ap-south-1"}
    assert Config.from_env(environ, None).region == "ap-south-1"


def test_dotenv_fills_in_but_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text('# local settings\nexport UPLOAD_MAX_BYTES=2048\nPORT="8181"\n')
    config = Config.from_env({"PORT": "9090"}, dotenv)
    assert (config.max_bytes, config.port) == (2048, 9090)


def test_config_repr_never_shows_the_secret_key() -> None:
    assert APP_SECRET not in repr(Config.from_env(EXTERNAL, None))


REQUIRED = "is not set; it is required when S3_BUCKET is set."
WHOLE = "must be a whole number from"
PREFIX_RULE = "must be /-separated names of letters, digits, '.', '-' and '_', none of them '..'."


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"S3_BUCKET": "b-1"}, f"AWS_ACCESS_KEY_ID {REQUIRED}"),
        ({**EXTERNAL, "AWS_SECRET_ACCESS_KEY": ""}, f"AWS_SECRET_ACCESS_KEY {REQUIRED}"),
        ({**EXTERNAL, "AWS_REGION": ""}, f"AWS_REGION {REQUIRED}"),
        (
            {**EXTERNAL, "AWS_REGION": "Mars"},
            "AWS_REGION 'Mars' is not a region name like eu-west-1.",
        ),
        (
            {**EXTERNAL, "S3_BUCKET": "My_Bucket"},
            "S3_BUCKET 'My_Bucket' is not a valid S3 bucket name.",
        ),
        (
            {"AWS_ENDPOINT_URL_S3": "minio:9000"},
            "AWS_ENDPOINT_URL_S3 'minio:9000' is not an http(s):// URL.",
        ),
        ({"UPLOAD_MAX_BYTES": "10MB"}, f"UPLOAD_MAX_BYTES {WHOLE} 1 to {TIB5}, not '10MB'."),
        ({"UPLOAD_MAX_BYTES": "0"}, f"UPLOAD_MAX_BYTES {WHOLE} 1 to {TIB5}, not '0'."),
        (
            {"UPLOAD_MAX_BYTES": str(5 * 2**40 + 1)},
            f"UPLOAD_MAX_BYTES {WHOLE} 1 to {TIB5}, not '{5 * 2**40 + 1}'.",
        ),
        (
            {"UPLOAD_PART_SIZE": str(5 * 2**20 - 1)},
            f"UPLOAD_PART_SIZE {WHOLE} 5242880 to 5368709120, not '5242879'.",
        ),
        (
            {"UPLOAD_MULTIPART_THRESHOLD": "1000"},
            f"UPLOAD_MULTIPART_THRESHOLD {WHOLE} 5242880 to 5368709120, not '1000'.",
        ),
        (
            {"UPLOAD_ALLOWED_TYPES": "images"},
            "UPLOAD_ALLOWED_TYPES entry 'images' is not like image/png.",
        ),
        (
            {"UPLOAD_ALLOWED_TYPES": " , "},
            "UPLOAD_ALLOWED_TYPES is empty; list types like image/*,application/pdf.",
        ),
        ({"UPLOAD_KEY_PREFIX": "a/../b"}, f"UPLOAD_KEY_PREFIX 'a/../b' {PREFIX_RULE}"),
        ({"UPLOAD_KEY_PREFIX": "up loads"}, f"UPLOAD_KEY_PREFIX 'up loads' {PREFIX_RULE}"),
        ({"UPLOAD_POLICY_TTL": "-5"}, f"UPLOAD_POLICY_TTL {WHOLE} 1 to 604800, not '-5'."),
        (
            {"UPLOAD_RATE_LIMIT": "30 per minute"},
            "UPLOAD_RATE_LIMIT '30 per minute' must look like 30/minute, or be off.",
        ),
        (
            {"UPLOAD_RATE_LIMIT": "0/minute"},
            "UPLOAD_RATE_LIMIT '0/minute' must look like 30/minute, or be off.",
        ),
        ({"S3_ACL": "public"}, "S3_ACL 'public' is not a canned ACL such as private."),
        ({"PORT": "70000"}, f"PORT {WHOLE} 1 to 65535, not '70000'."),
        ({"WAITRESS_THREADS": "many"}, f"WAITRESS_THREADS {WHOLE} 1 to 256, not 'many'."),
        ({"ACCESS_LOG": "yes"}, "ACCESS_LOG must be on or off, not 'yes'."),
    ],
)
def test_bad_configuration_is_one_sentence_naming_the_variable(environ, message) -> None:
    with pytest.raises(ConfigError) as error:
        Config.from_env(environ, None)
    assert str(error.value) == message


def test_rate_limit_can_be_switched_off() -> None:
    assert Config.from_env({"UPLOAD_RATE_LIMIT": "off"}, None).rate_limit is None
    assert Config.from_env({"UPLOAD_RATE_LIMIT": "0"}, None).rate_limit is None


def test_dotenv_line_without_equals_is_refused(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=1\nJUST A LINE\n")
    with pytest.raises(ConfigError, match=r"line 2 is not KEY=VALUE\.$"):
        Config.from_env({}, dotenv)


def test_help_documents_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        server.main(["--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    for setting in SETTINGS:
        assert f"  {setting.name:<22} {setting.help}" in text
        assert (f"[{setting.default}]" in text) == bool(setting.default)


def test_readme_settings_table_is_the_settings_table() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.partition("\n## Settings\n")[2].partition("\n## ")[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table == markdown_table()


def test_create_app_without_a_config_reads_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here, and DATA_DIR lands in tmp_path
    for name, value in {**EXTERNAL, "UPLOAD_KEY_PREFIX": "from-env", "PORT": "80"}.items():
        monkeypatch.setenv(name, value)
    client = webtest.TestApp(server.create_app())
    assert client.get("/healthz").json == {"status": "ok", "s3": "external"}
    key = re.search(r'name="key" value="([^"]+)"', client.get("/").text)[1]
    assert key.startswith("from-env/")


def test_main_stops_with_the_config_error(monkeypatch, capsys) -> None:
    monkeypatch.setenv("S3_BUCKET", "my-bucket")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.chdir(Path(__file__).parent)
    assert server.main([]) == 2
    assert "Configuration error: AWS_ACCESS_KEY_ID is not set" in capsys.readouterr().err


# ---- page ----------------------------------------------------------------------------------


def test_page_renders_limits_token_and_no_js_form(client, config) -> None:
    response = client.get("/")
    assert response.content_type == "text/html"
    embedded = page_config(response.text)
    assert embedded["limits"] == {
        "max_bytes": 10485760,
        "max_human": "10 MB",
        "allowed_types": [*SAFE_IMAGES, "application/pdf", "text/plain"],
        "allowed_names": "images, PDFs and text files",
        "type_names": file_types.TYPE_NAMES,
        "policy_ttl": 300,
        "form_ttl": 3600,
        "auto_start": True,
        "multipart_threshold": 64 * 2**20,
    }
    assert tokens.page_token_valid(
        tokens.Secrets.derive(APP_SECRET), embedded["pageToken"], APP_NOW
    )
    forms = response.html.find_all("form", class_="nojs-form")
    assert [form["data-accept"] for form in forms] == ["image/*", "application/pdf", "text/plain"]
    pdf = nojs_form_fields(response.text, "application/pdf")
    assert forms[1]["action"] == f"{config.endpoint}/uploads/"
    assert KEY_FORMAT.fullmatch(pdf["key"])
    assert pdf["Content-Type"] == "application/pdf"
    redirect = urlsplit(pdf["success_action_redirect"])
    assert (redirect.netloc, redirect.path) == ("localhost:80", "/uploads/done")
    policy = json.loads(base64.b64decode(pdf["policy"]))
    assert policy["expiration"] == "2026-12-02T02:02:03.000Z"  # UPLOAD_FORM_TTL: an hour


def nojs_form_fields(html: str, accept: str) -> dict[str, str]:
    """The hidden fields of the page's no-JavaScript form for `accept` (e.g. text/plain)."""
    page = bs4.BeautifulSoup(html, "html.parser")
    form = page.find("form", attrs={"data-accept": accept})
    return {field["name"]: field["value"] for field in form.find_all("input", type="hidden")}


def test_page_sends_security_headers(client, config) -> None:
    headers = client.get("/").headers
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp
    assert f"connect-src 'self' {config.endpoint};" in csp
    assert f"form-action 'self' {config.endpoint};" in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cache-Control"] == "no-store"


def test_signed_answers_are_never_cached_but_libraries_may_be(client) -> None:
    assert ask_for_form(client).headers["Cache-Control"] == "no-store"
    assert "Cache-Control" not in client.get("/vendor/jquery.js").headers


SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options")


def test_every_answer_carries_each_security_header_once(client) -> None:
    answers = [
        client.get("/"),
        ask_for_form(client),
        client.get("/s3_credentials", status=403),
        client.get("/static/style.css"),
        client.get("/static/../server.py", status=403),
        client.get("/vendor/jquery.js"),
        client.get("/nope", status=404),
        client.delete("/uploads", status=405),
        client.head("/healthz"),
    ]
    for answer in answers:
        names = [name for name, _ in answer.headerlist]
        for name in [*SECURITY_HEADERS, "Referrer-Policy"]:
            assert names.count(name) == 1, (answer.request.path, name)
        static = answer.request.path.startswith(("/static/", "/vendor/"))
        assert names.count("Cache-Control") == (0 if static else 1), answer.request.path


def test_page_shows_the_notice_for_an_error_redirect_as_an_alert(client) -> None:
    page = client.get("/", {"error": "409"}).text
    assert (
        '<p class="notice notice-error" role="alert">'
        "Upload not recorded: the file in S3 is not the one the browser reported.</p>"
    ) in page


def test_static_files_come_from_public_only(client) -> None:
    assert client.get("/static/style.css").content_type == "text/css"
    assert client.get("/static/../server.py", status=403).json == {"error": "Access denied."}
    assert client.get("/static/nope.js", status=404).json == {"error": "Not found."}


def test_vendor_serves_only_the_whitelisted_libraries(client) -> None:
    assert "jQuery" in client.get("/vendor/jquery.js").text[:200]
    refused = client.get("/vendor/package.json", status=404)
    assert refused.json == {"error": "There is no vendor file named 'package.json'."}


def test_healthz_says_which_s3(client) -> None:
    assert client.get("/healthz").json == {"status": "ok", "s3": "external"}


def test_unknown_route_and_wrong_method_are_json(client) -> None:
    assert client.get("/nope", status=404).json == {"error": "Not found."}
    assert client.delete("/uploads", status=405).json == {"error": "Method not allowed."}


# ---- signing endpoint ------------------------------------------------------------------------


def test_signing_endpoint_returns_a_form_for_a_server_chosen_key(client, config) -> None:
    answer = ask_for_form(client, filename="Holiday Photo.JPG").json
    assert KEY_FORMAT.fullmatch(answer["key"]) and answer["key"].endswith(".jpg")
    assert answer["key"].startswith("uploads/2026/12/02/")
    assert answer["url"] == f"{config.endpoint}/uploads/"
    assert answer["expires_at"] == "2026-12-02T01:07:03Z"
    fields = answer["fields"]
    assert list(fields)[:4] == [
        "key",
        "Content-Type",
        "success_action_status",
        "x-amz-meta-filename",
    ]
    assert (fields["key"], fields["Content-Type"]) == (answer["key"], "image/jpeg")
    assert fields["x-amz-meta-filename"] == "Holiday Photo.JPG"
    keys = tokens.Secrets.derive(APP_SECRET)
    assert answer["token"] == tokens.key_token(keys, answer["key"], APP_NOW)


def test_policy_pins_type_size_range_and_expiry(client) -> None:
    fields = ask_for_form(client, content_type="Application/PDF", filename="a.pdf").json
    policy = json.loads(signer.base64.b64decode(fields["fields"]["policy"]))
    assert policy["expiration"] == "2026-12-02T01:07:03.000Z"
    assert ["content-length-range", 1, 10485760] in policy["conditions"]
    assert {"Content-Type": "application/pdf"} in policy["conditions"]
    assert {"bucket": "uploads"} in policy["conditions"]


@pytest.mark.parametrize(
    ("filename", "content_type", "extension"),
    [
        ("photo.JPG", "image/jpeg", ".jpg"),
        ("a.HTML", "image/png", ".png"),  # the declared, allowed type names it, not the name
        ("archive.tar.gz", "application/pdf", ".pdf"),
        ("README", "text/plain", ".txt"),
        ("evil.php", "image/gif", ".gif"),
    ],
)
def test_key_extension_comes_from_the_declared_type(client, filename, content_type, extension):
    form = ask_for_form(client, filename=filename, content_type=content_type).json
    assert form["key"].endswith(extension) and form["key"].count(".") == 1


def test_filename_is_kept_as_ascii_safe_metadata(client) -> None:
    name = "résumé\u202e\x00 <b>.txt"
    fields = ask_for_form(client, filename=name, content_type="text/plain").json["fields"]
    assert fields["x-amz-meta-filename"] == "r%C3%A9sum%C3%A9 <b>.txt"
    assert filenames.decode_metadata(fields["x-amz-meta-filename"]) == "résumé <b>.txt"


def test_long_filename_is_cut_to_fit_s3_metadata() -> None:
    name = filenames.clean_filename("é" * 400 + ".png")
    assert len(filenames.encode_metadata(name)) <= filenames.MAX_FILENAME_METADATA_BYTES
    assert name == "é" * 170


NO_FILENAME = "The filename parameter is missing or empty."
BAD_TYPE = "The content_type parameter must be a MIME type like image/png."
BAD_SIZE = "The size parameter must be a whole number of bytes, at least 1."


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"filename": ""}, 400, NO_FILENAME),
        ({"filename": "\x00\x1f\u200b"}, 400, NO_FILENAME),
        ({"content_type": ""}, 400, BAD_TYPE),
        ({"content_type": "image/png; x=1"}, 400, BAD_TYPE),
        ({"content_type": "image"}, 400, BAD_TYPE),
        ({"content_type": "image/png\r\nX-Evil: 1"}, 400, BAD_TYPE),
        ({"size": ""}, 400, BAD_SIZE),
        ({"size": "0"}, 400, BAD_SIZE),
        ({"size": "-1"}, 400, BAD_SIZE),
        ({"size": "1e3"}, 400, BAD_SIZE),
        ({"size": "1" * 16}, 400, BAD_SIZE),
        ({"size": "10485761"}, 413, "The file is larger than the 10 MB limit."),
        ({"content_type": "text/html"}, 415, "Files of type text/html are not accepted here."),
        (
            {"content_type": "application/x-pdf"},
            415,
            "Files of type application/x-pdf are not accepted here.",
        ),
    ],
)
def test_bad_form_requests_are_refused(client, params, status, message) -> None:
    response = ask_for_form(client, status=status, **params)
    assert response.json == {"error": message}


def test_query_that_is_not_utf8_is_a_clear_answer_not_a_crash(client) -> None:
    headers = {"X-Upload-Token": page_token(client)}
    query = "filename=%FF%FE&content_type=image/png&size=1"
    answer = client.get(f"/s3_credentials?{query}", headers=headers).json
    assert answer["fields"]["x-amz-meta-filename"] == "%EF%BF%BD%EF%BF%BD"
    assert client.get("/?uploaded=%FF").status_int == 200


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.dictionaries(st.sampled_from(["filename", "content_type", "size"]), st.text()))
def test_any_signing_request_gets_an_answer_never_a_500(unlimited, query) -> None:
    headers = {"X-Upload-Token": page_token(unlimited)}
    response = unlimited.get("/s3_credentials", query, headers=headers, expect_errors=True)
    assert response.status_int in (200, 400, 413, 415)
    assert response.content_type == "application/json"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_any_registration_body_gets_an_answer_never_a_500(client, body) -> None:
    headers = {"X-Upload-Token": page_token(client), "Content-Type": "application/json"}
    response = client.post("/uploads", body, headers=headers, expect_errors=True)
    assert response.status_int in (400, 403)
    assert set(response.json) == {"error"}


def test_largest_allowed_file_gets_a_form(client) -> None:
    assert ask_for_form(client, size="10485760").status_int == 200


CROSS_SITE = "Cross-site requests may not use this endpoint."
OTHER_ORIGIN = "Requests from other origins may not use this endpoint."
NO_TOKEN = "The X-Upload-Token header is missing or expired; reload the page."


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Sec-Fetch-Site": "cross-site"}, CROSS_SITE),
        ({"Origin": "https://evil.example"}, OTHER_ORIGIN),
        ({"Origin": "http://localhost:8080"}, OTHER_ORIGIN),
        ({"Origin": "null"}, OTHER_ORIGIN),
        ({"X-Upload-Token": ""}, NO_TOKEN),
        ({"X-Upload-Token": "1796173323.00"}, NO_TOKEN),
        ({"X-Upload-Token": "garbage"}, NO_TOKEN),
        ({"X-Upload-Token": "999999999999.ab"}, NO_TOKEN),
        ({"X-Upload-Token": "1.2.3"}, NO_TOKEN),
    ],
)
def test_signing_endpoint_refuses_other_sites(client, headers, message) -> None:
    query = {"filename": "a.png", "content_type": "image/png", "size": "10"}
    sent = {"X-Upload-Token": page_token(client), **headers}
    response = client.get("/s3_credentials", query, headers=sent, status=403)
    assert response.json == {"error": message}


def test_signing_endpoint_accepts_same_site_requests_from_our_origin(client) -> None:
    headers = {
        "X-Upload-Token": page_token(client),
        "Origin": "http://localhost:80",
        "Sec-Fetch-Site": "same-origin",
    }
    query = {"filename": "a.png", "content_type": "image/png", "size": "10"}
    assert client.get("/s3_credentials", query, headers=headers).status_int == 200


def test_page_token_expires_after_twelve_hours(client, clock) -> None:
    headers = {"X-Upload-Token": page_token(client)}
    query = {"filename": "a.png", "content_type": "image/png", "size": "10"}
    clock.advance(12 * 3600)
    assert client.get("/s3_credentials", query, headers=headers).status_int == 200
    clock.advance(1)
    refused = client.get("/s3_credentials", query, headers=headers, status=403)
    assert refused.json["error"].startswith("The X-Upload-Token header is missing or expired")


def test_forged_page_token_for_another_time_is_refused() -> None:
    keys = tokens.Secrets.derive(APP_SECRET)
    token = tokens.issue_page_token(keys, APP_NOW)
    issued, mac = token.split(".")
    assert not tokens.page_token_valid(keys, f"{int(issued) + 1}.{mac}", APP_NOW)
    other = tokens.Secrets.derive("another secret")
    assert not tokens.page_token_valid(keys, tokens.issue_page_token(other, APP_NOW), APP_NOW)


def test_page_token_refuses_forged_truncated_foreign_and_expired_tokens() -> None:
    keys = tokens.Secrets.derive(APP_SECRET)
    token = tokens.issue_page_token(keys, APP_NOW)
    issued, mac = token.split(".")
    assert tokens.page_token_valid(keys, token, APP_NOW)
    forged = f"{issued}.{'0' * len(mac)}"
    assert not tokens.page_token_valid(keys, forged, APP_NOW)
    assert not tokens.page_token_valid(keys, f"{issued}.{mac[:-1]}", APP_NOW)
    assert not tokens.page_token_valid(keys, f"{issued}.", APP_NOW)
    other = tokens.Secrets.derive("another secret")
    assert not tokens.page_token_valid(other, token, APP_NOW)
    assert not tokens.page_token_valid(keys, token, APP_NOW + timedelta(hours=12, seconds=1))
    assert not tokens.page_token_valid(keys, token, APP_NOW - timedelta(seconds=61))


def test_rate_limit_answers_429_with_retry_after(config, clock) -> None:
    client = app_client(dataclasses.replace(config, rate_limit=rate_limit.RateLimit(3, 60)), clock)
    for _ in range(3):
        ask_for_form(client)
        clock.advance(10)
    refused = ask_for_form(client, status=429)
    assert refused.json == {"error": "Too many upload requests; wait and try again."}
    assert refused.headers["Retry-After"] == "30"
    clock.advance(30)
    assert ask_for_form(client).status_int == 200


def test_rate_limit_is_per_client(config, clock) -> None:
    client = app_client(dataclasses.replace(config, rate_limit=rate_limit.RateLimit(1, 60)), clock)
    ask_for_form(client)
    ask_for_form(client, status=429)
    other = {"REMOTE_ADDR": "192.0.2.99"}
    headers = {"X-Upload-Token": page_token(client)}
    query = {"filename": "a.png", "content_type": "image/png", "size": "10"}
    assert (
        client.get("/s3_credentials", query, headers=headers, extra_environ=other).status_int == 200
    )


def test_rate_limiter_is_thread_safe() -> None:
    limiter = rate_limit.RateLimiter(rate_limit.RateLimit(50, 60))
    allowed = []

    def ask() -> None:
        for _ in range(20):
            if limiter.wait("client", 1000.0) == 0:
                allowed.append(1)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 50


# ---- upload registration without S3 --------------------------------------------------------


def report(client, body, status, headers=None):
    sent = {"X-Upload-Token": page_token(client), **(headers or {})}
    return client.post_json("/uploads", body, headers=sent, status=status)


def issued(key: str = "uploads/2026/12/02/f00d.txt", moment: datetime = APP_NOW) -> dict:
    """A report for a key this app issued at `moment` (the fixed clock's time by default)."""
    keys = tokens.Secrets.derive(APP_SECRET)
    return {"key": key, "etag": '"abc"', "token": tokens.key_token(keys, key, moment)}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "The body must be a JSON object with string key, etag and token."),
        (
            {"key": "k", "etag": "e"},
            "The body must be a JSON object with string key, etag and token.",
        ),
        (
            {"key": 1, "etag": "e", "token": "t"},
            "The body must be a JSON object with string key, etag and token.",
        ),
    ],
)
def test_registration_refuses_a_bad_body(client, body, message) -> None:
    assert report(client, body, 400).json == {"error": message}


def test_registration_refuses_a_body_that_is_not_json(client) -> None:
    headers = {"X-Upload-Token": page_token(client), "Content-Type": "application/json"}
    response = client.post("/uploads", "{nope", headers=headers, status=400)
    assert response.json == {"error": "The body is not valid JSON."}
    form = client.post(
        "/uploads", {"key": "k"}, headers={"X-Upload-Token": page_token(client)}, status=400
    )
    assert form.json == {"error": "The body must be JSON (Content-Type: application/json)."}


def test_registration_refuses_a_key_the_server_did_not_issue(client) -> None:
    forged = {**issued(), "key": "uploads/2026/12/02/someone-elses.txt"}
    response = report(client, forged, 403)
    assert response.json == {"error": "This key was not issued by this server."}


def test_registration_refuses_other_sites(client) -> None:
    response = report(client, issued(), 403, {"Sec-Fetch-Site": "cross-site"})
    assert response.json == {"error": "Cross-site requests may not use this endpoint."}


def test_registration_is_502_when_s3_is_unreachable(client) -> None:
    response = report(client, issued(), 502)
    assert response.json == {"error": "S3 could not be reached to check the upload."}


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback socket that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_registration_is_504_when_s3_does_not_answer(config, clock, silent_server) -> None:
    client = app_client(dataclasses.replace(config, endpoint=silent_server), clock)
    response = report(client, issued(), 504)
    assert response.json == {"error": "S3 did not answer in time; try again."}


@pytest.fixture
def garbage_server() -> Iterator[str]:
    """A loopback server that answers every connection with something that is not HTTP."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def answer() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = listener.accept()
                with connection:
                    connection.recv(65536)
                    connection.sendall(b"HELLO THERE\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() so the thread ends
    listener.close()
    thread.join(timeout=5)


def test_registration_is_502_when_s3_answers_garbage(config, clock, garbage_server) -> None:
    client = app_client(dataclasses.replace(config, endpoint=garbage_server), clock)
    response = report(client, issued(), 502)
    assert response.json == {"error": "S3 sent an answer that is not valid HTTP."}


def test_list_is_a_clear_502_when_s3_is_unreachable(config) -> None:
    client = owner_client(config)
    response = client.get("/uploads", status=502)
    assert response.json == {"error": "S3 could not be reached to check the upload."}
    assert "The list of uploads could not be read" in client.get("/").text


def test_no_js_redirect_with_a_forged_token_goes_back_with_an_error(client) -> None:
    query = {"bucket": "uploads", "key": "uploads/2026/12/02/x", "etag": '"e"', "token": "0" * 64}
    response = client.get("/uploads/done", query, status=303)
    assert parse_qs(urlsplit(response.location).query) == {"error": ["403"]}


def test_access_log_has_no_query_string(caplog) -> None:
    def hello(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    with caplog.at_level(logging.INFO, logger="server"):
        webtest.TestApp(serving.access_log(hello)).get("/uploads/done?token=abc&X-Amz-Signature=d")
    assert caplog.messages == ["GET /uploads/done 200"]


# ---- README: the snippets a reader copies -------------------------------------------------------

README = Path(__file__).parent.parent / "README.md"


def readme_section(title: str) -> str:
    return README.read_text(encoding="utf-8").split(f"## {title}\n")[1].split("\n## ")[0]


def test_quiet_channel_is_written_for_the_installed_waitress() -> None:
    """QuietChannel overrides waitress internals: an upgrade must re-check the busy loop it
    works around (docs/BENCHMARKS.md) before this version moves."""
    assert importlib.metadata.version("waitress") == serving.WAITRESS_VERSION


def test_readme_read_the_code_table_names_every_source_file_once() -> None:
    """The reading order must cover the whole product: a new module, or a renamed one, fails
    here until the table says what it teaches."""
    root = README.parent
    named = re.findall(r"`([\w/.-]+\.(?:py|js|css|html))`", readme_section("Read the code"))
    product = {
        path.relative_to(root).as_posix()
        for pattern in ("*.py", "local_s3/*.py", "public/*", "views/*")
        for path in root.glob(pattern)
    }
    assert sorted(set(named) - {"tests/conftest.py"}) == sorted(product)
    assert len(named) == len(set(named))


def test_readme_iam_policy_and_cors_rule_match_what_the_app_needs() -> None:
    section = readme_section("Using real S3, MinIO, R2 or Ceph")
    iam, cors = (json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S))
    uploads, records, listing = iam["Statement"]
    bucket = "arn:aws:s3:::my-upload-bucket"
    defaults = Config.from_env({}, None)
    assert sorted(uploads["Action"]) == ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    assert uploads["Resource"] == f"{bucket}/{defaults.key_prefix}/*"
    assert sorted(records["Action"]) == ["s3:GetObject", "s3:PutObject"]
    assert records["Resource"] == f"{bucket}/{defaults.registry_prefix}/*"
    assert (listing["Action"], listing["Resource"]) == ("s3:ListBucket", bucket)
    assert listing["Condition"] == {"StringLike": {"s3:prefix": f"{defaults.registry_prefix}/*"}}
    (rule,) = cors["CORSRules"]
    assert rule["AllowedOrigins"] == [Config.from_env({}, None).app_origin]
    assert sorted(rule["AllowedMethods"]) == ["GET", "HEAD", "POST", "PUT"]
    assert sorted(rule["ExposeHeaders"]) == ["ETag", "Location"]


def test_readme_settings_are_ones_the_app_reads(post_to_s3, upload) -> None:
    section = readme_section("Using real S3, MinIO, R2 or Ceph")
    names = set(re.findall(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]+)=", section))
    assert names and names <= {setting.name for setting in SETTINGS}


# ---- end to end with the real local S3 -------------------------------------------------------

APP_ORIGIN = "http://localhost:80"  # WebTest's host, the origin S3 must allow


@pytest.fixture
def s3(tmp_path: Path, config: Config) -> Iterator[local_s3.LocalS3]:
    """The embedded local S3 on a free loopback port, trusting our test credentials."""
    s3_config = local_s3.S3Config(
        data_dir=tmp_path / "s3",
        buckets=("uploads",),
        credentials={config.credentials.access_key: APP_SECRET},
        cors_origins=(APP_ORIGIN,),
    )
    with local_s3.LocalS3(s3_config, threads=8) as running:  # a few: no slow clients here
        yield running


@pytest.fixture
def live(config: Config, s3: local_s3.LocalS3) -> webtest.TestApp:
    """The app against the local S3, on the real clock (S3 checks policy expiry against it),
    its owner logged in."""
    return owner_client(dataclasses.replace(config, endpoint=s3.url, s3_timeout=5))


@pytest.fixture
def post_to_s3(post_form):
    """A browser's form upload from the app's page: with the Origin header a browser sends."""
    return functools.partial(post_form, headers={"Origin": APP_ORIGIN})


def xml_field(body: bytes, name: str) -> str:
    return ET.fromstring(body).findtext(name)


@pytest.fixture
def upload(live, post_to_s3):
    """upload(content, **params): ask the app for a form, post the file to S3, return the form
    and S3's PostResponse."""

    def ask_and_post(content: bytes, **params) -> dict:
        form = ask_for_form(live, size=str(len(content)), **params).json
        status, _, body = post_to_s3(form["url"], form["fields"], content)
        assert status == 201, body
        return {**form, "etag": xml_field(body, "ETag"), "s3_key": xml_field(body, "Key")}

    return ask_and_post


def test_signed_form_is_accepted_by_s3_then_registered_and_listed(live, upload) -> None:
    content = "Bonjour, résumé\n".encode()
    sent = upload(content, filename="Résumé final.TXT", content_type="text/plain")
    assert (sent["s3_key"], sent["etag"]) == (sent["key"], f'"{hashlib.md5(content).hexdigest()}"')
    report = {"key": sent["key"], "etag": sent["etag"], "token": sent["token"]}
    record = live.post_json("/uploads", report, headers={"X-Upload-Token": page_token(live)})
    assert record.status_int == 201
    registered = record.json["upload"]
    assert {k: v for k, v in registered.items() if k not in ("url", "created_at")} == {
        "key": sent["key"],
        "filename": "Résumé final.TXT",
        "size": len(content),
        "etag": hashlib.md5(content).hexdigest(),
        "content_type": "text/plain",
    }
    with urllib.request.urlopen(registered["url"], timeout=5) as download:
        assert download.read() == content
    (listed,) = live.get("/uploads").json["uploads"]
    assert without_signature(listed) == without_signature(registered)
    assert "Résumé final.TXT" in live.get("/").text


def without_signature(record: dict) -> dict:
    """The record with its link cut at the query: each listing presigns afresh, so the
    X-Amz-Date (and with it the signature) moves when the clock crosses a second."""
    return {**record, "url": record["url"].partition("?")[0]}


def test_registration_is_404_when_the_object_is_not_in_s3(live) -> None:
    response = report(live, issued(moment=datetime.now(UTC)), 404)
    assert response.json == {"error": "The object was not found in S3 (S3 answered 404)."}


def test_registration_is_404_when_s3_refuses_the_app_credentials(config, s3) -> None:
    wrong = signer.Credentials(config.credentials.access_key, "not the secret S3 knows")
    client = app_client(dataclasses.replace(config, endpoint=s3.url, credentials=wrong))
    key = "uploads/2026/12/02/f00d.txt"
    body = {
        "key": key,
        "etag": "e",
        "token": tokens.key_token(tokens.Secrets.derive(wrong.secret_key), key, datetime.now(UTC)),
    }
    response = report(client, body, 404)
    assert response.json == {
        "error": "The object was not found in S3, or this app may not read it (S3 answered 403)."
    }


def test_registration_is_409_when_the_etag_differs(live, upload) -> None:
    sent = upload(b"hello", filename="a.txt", content_type="text/plain")
    wrong = {"key": sent["key"], "etag": '"' + "0" * 32 + '"', "token": sent["token"]}
    response = report(live, wrong, 409)
    assert response.json == {"error": "The ETag does not match the object stored in S3."}
    assert live.get("/uploads").json == {"uploads": [], "next": None}


def test_registration_accepts_an_etag_without_quotes(live, upload) -> None:
    sent = upload(b"hello", filename="a.txt", content_type="text/plain")
    bare = {"key": sent["key"], "etag": sent["etag"].strip('"'), "token": sent["token"]}
    assert report(live, bare, 201).json["upload"]["etag"] == sent["etag"].strip('"')


def test_s3_refuses_a_content_type_other_than_the_declared_one(live, post_to_s3) -> None:
    form = ask_for_form(live, size="5").json
    fields = {**form["fields"], "Content-Type": "text/html"}
    status, _, body = post_to_s3(form["url"], fields, b"<b>x</b>")
    assert (status, xml_field(body, "Code")) == (403, "AccessDenied")
    assert 'Policy Condition failed: ["eq", "$Content-Type", "image/jpeg"]' in xml_field(
        body, "Message"
    )


def test_s3_refuses_a_file_over_the_configured_limit(config, s3, post_to_s3) -> None:
    small = dataclasses.replace(config, endpoint=s3.url, max_bytes=4)
    client = app_client(small)
    form = ask_for_form(client, size="4").json
    status, _, body = post_to_s3(form["url"], form["fields"], b"12345")
    assert (status, xml_field(body, "Code")) == (400, "EntityTooLarge")


def test_no_js_form_uploads_and_redirects_back_to_the_page(live, s3, post_to_s3) -> None:
    fields = nojs_form_fields(live.get("/").text, "text/plain")
    url = f"{s3.url}/uploads/"
    status, headers, _ = post_to_s3(url, fields, b"plain form bytes", "notes.txt")
    assert status == 303
    back = urlsplit(headers["Location"])
    assert (back.scheme, back.netloc, back.path) == ("http", "localhost:80", "/uploads/done")
    done = live.get(f"{back.path}?{back.query}", status=303)
    key = parse_qs(urlsplit(done.location).query)["uploaded"][0]
    assert KEY_FORMAT.fullmatch(key)
    assert "Uploaded notes.txt" in live.get(done.location).text
    assert [(u["key"], u["filename"]) for u in live.get("/uploads").json["uploads"]] == [
        (key, "notes.txt")
    ]


def test_no_js_upload_keeps_a_non_ascii_file_name_through_s3s_filename_variable(
    live, s3, post_to_s3
) -> None:
    fields = nojs_form_fields(live.get("/").text, "application/pdf")
    assert fields["x-amz-meta-filename"] == "${filename}"
    url = f"{s3.url}/uploads/"
    _, headers, _ = post_to_s3(url, fields, b"%PDF-1.4 bytes", "rapport d'\u00e9t\u00e9.pdf")
    back = urlsplit(headers["Location"])
    live.get(f"{back.path}?{back.query}", status=303)
    [upload] = live.get("/uploads").json["uploads"]
    assert upload["filename"] == "rapport d'\u00e9t\u00e9.pdf"
    assert KEY_FORMAT.fullmatch(upload["key"])


def nojs_upload(live, s3, post_to_s3, accept, content, filename, **fields) -> tuple[str, str]:
    """Post `content` through the page's no-JS form for `accept` (the person's choice of kind
    in `fields`), follow S3's redirect to /uploads/done: (its key, where that sends the browser)."""
    form = nojs_form_fields(live.get("/").text, accept) | fields
    status, headers, body = post_to_s3(f"{s3.url}/uploads/", form, content, filename)
    assert status == 303, body
    back = urlsplit(headers["Location"])
    done = live.get(f"{back.path}?{back.query}", status=303)
    return parse_qs(back.query)["key"][0], done.location


def test_no_js_png_is_stored_with_its_type_and_listed(live, s3, post_to_s3) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(100)
    image = {"Content-Type": "image/png"}
    key, location = nojs_upload(live, s3, post_to_s3, "image/*", png, "cat.png", **image)
    assert location == "/?uploaded=" + quote(key)
    [upload] = live.get("/uploads").json["uploads"]
    assert (upload["filename"], upload["content_type"]) == ("cat.png", "image/png")


@pytest.mark.parametrize(
    ("accept", "kind", "content"),
    [
        ("image/*", "image/png", b"PK\x03\x04 a zip archive"),
        ("image/*", "image/jpeg", b"\x89PNG\r\n\x1a\n a png, not a jpeg"),
        ("text/plain", None, b"\x00\x01\x02 binary, not text"),
        ("application/pdf", None, b"<html>not a pdf</html>"),
    ],
    ids=["zip-as-png", "png-as-jpeg", "binary-as-text", "html-as-pdf"],
)
def test_no_js_file_that_is_not_what_it_says_is_deleted_and_not_listed(
    live, s3, config, post_to_s3, accept, kind, content
) -> None:
    chosen = {"Content-Type": kind} if kind else {}
    key, location = nojs_upload(live, s3, post_to_s3, accept, content, "file.bin", **chosen)
    assert parse_qs(urlsplit(location).query) == {"error": ["415"]}
    notice = live.get(location).html.find(class_="notice-error").text
    assert notice == "Upload not recorded: " + page_data.NOJS_ERRORS["415"]
    assert live.get("/uploads").json == {"uploads": [], "next": None}
    s3_config = dataclasses.replace(config, endpoint=s3.url)
    with pytest.raises(s3_client.S3Failure) as missing:
        s3_client.head_object(s3_config, key, datetime.now(UTC))
    assert missing.value.status == 404


def test_no_js_form_cannot_declare_a_type_outside_its_family(live, s3, post_to_s3) -> None:
    form = nojs_form_fields(live.get("/").text, "image/*") | {"Content-Type": "application/zip"}
    status, _, body = post_to_s3(f"{s3.url}/uploads/", form, b"PK\x03\x04", "a.zip")
    assert (status, xml_field(body, "Code")) == (403, "AccessDenied")
    assert '["starts-with", "$Content-Type", "image/"]' in xml_field(body, "Message")


def test_no_js_redirect_for_another_bucket_is_refused(live) -> None:
    query = {"bucket": "elsewhere", "key": "k", "etag": "e", "token": "t"}
    response = live.get("/uploads/done", query, status=303)
    assert parse_qs(urlsplit(response.location).query) == {"error": ["400"]}


@pytest.mark.parametrize(
    ("environ", "origin"),
    [
        ({}, "http://127.0.0.1:8080"),
        ({"HOST": "0.0.0.0"}, "http://127.0.0.1:8080"),
        ({"HOST": "::", "PORT": "80"}, "http://127.0.0.1:80"),
        (
            {"HOST": "0.0.0.0", "PUBLIC_HOST": "uploads.example.test"},
            "http://uploads.example.test:8080",
        ),
    ],
)
def test_browsers_are_given_a_host_they_can_reach(environ, origin) -> None:
    assert Config.from_env(environ, None).app_origin == origin


def test_main_gives_browsers_the_public_host_for_the_app_and_the_embedded_s3(tmp_path) -> None:
    port, s3_port = free_port(), free_port()
    environ = {"PATH": "/usr/bin:/bin", "PORT": str(port), "S3_PORT": str(s3_port)}
    environ.update(PUBLIC_HOST="localhost", DATA_DIR=str(tmp_path / "data"))
    command = [sys.executable, str(Path(server.__file__).resolve())]
    process = subprocess.Popen(
        command, env=environ, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
            assert f'action="http://localhost:{s3_port}/uploads/"' in page.read().decode()
        preflight = urllib.request.Request(
            f"http://127.0.0.1:{s3_port}/uploads/",
            method="OPTIONS",
            headers={"Origin": f"http://localhost:{port}", "Access-Control-Request-Method": "POST"},
        )
        with urllib.request.urlopen(preflight, timeout=5) as answer:
            allowed = answer.headers["Access-Control-Allow-Origin"]
        assert allowed == f"http://localhost:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=20)[0].decode()
    assert output.startswith(
        f"Upload app: http://localhost:{port}/\n"
        f"S3: http://localhost:{s3_port} (embedded local S3)\n"
    )


def test_main_serves_the_page_with_the_embedded_s3_and_stops_on_ctrl_c(tmp_path) -> None:
    port, s3_port = free_port(), free_port()
    environ = {"PATH": "/usr/bin:/bin", "PORT": str(port), "S3_PORT": str(s3_port)}
    environ["DATA_DIR"] = str(tmp_path / "data")
    command = [sys.executable, str(Path(server.__file__).resolve())]
    process = subprocess.Popen(
        command, env=environ, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        health = wait_for(f"http://127.0.0.1:{port}/healthz")
        assert json.loads(health) == {"status": "ok", "s3": "embedded"}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
            assert f"http://127.0.0.1:{s3_port}" in page.read().decode()
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=20)[0].decode()
    assert process.returncode == 0
    assert output.startswith(
        f"Upload app: http://127.0.0.1:{port}/\n"
        f"S3: http://127.0.0.1:{s3_port} (embedded local S3)\n"
    )
    assert output.rstrip().endswith("Stopped.")
    assert [path.name for path in (tmp_path / "data").iterdir()] == ["s3"]  # the app's own: none


def wait_for(url: str, attempts: int = 100) -> bytes:
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                return reply.read()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def test_banner_names_the_bucket_and_never_the_secret() -> None:
    config = Config.from_env(EXTERNAL, None)
    assert server.banner(config) == (
        "Upload app: http://127.0.0.1:8080/\nS3: https://my-bucket.s3.eu-west-1.amazonaws.com "
        "(bucket my-bucket)"
    )


def test_quiet_channel_still_sends_an_answer_larger_than_waitress_buffer() -> None:
    """Over the high watermark the worker waits for waitress's loop, which must then send."""
    chunk = secrets.token_bytes(64 * 1024)

    def large(environ, start_response):
        start_response("200 OK", [("Content-Length", str(len(chunk) * 64))])
        return (chunk for _ in range(64))

    quiet = serving.BackgroundServer(
        large, threads=1, channel_class=serving.QuietChannel, outbuf_high_watermark=len(chunk)
    )
    with quiet:
        connection = http.client.HTTPConnection(
            "127.0.0.1", int(quiet.url.rsplit(":", 1)[1]), timeout=10
        )
        for _ in range(2):  # the same keep-alive connection serves the next request too
            connection.request("GET", "/")
            assert connection.getresponse().read() == chunk * 64
        connection.close()


# ---- the upload list, kept in the bucket (registry.py) ---------------------------------------


def register(client: webtest.TestApp, sent: dict, status: int = 201) -> webtest.TestResponse:
    body = {"key": sent["key"], "etag": sent["etag"], "token": sent["token"]}
    return report(client, body, status)


def registry_objects(s3: local_s3.LocalS3) -> list[str]:
    return sorted(o.key for o in local_s3.list_objects(s3.config) if o.key.startswith("registry/"))


def test_list_is_empty_at_first(live) -> None:
    assert live.get("/uploads").json == {"uploads": [], "next": None}


def test_a_registered_upload_is_one_json_record_in_the_bucket(live, upload, s3) -> None:
    sent = upload(b"hello", filename="a.txt", content_type="text/plain")
    registered = register(live, sent).json["upload"]
    (name,) = registry_objects(s3)
    stored = local_s3.stored_object(s3.config, "uploads", name)
    assert stored.content_type == "application/json"
    record = json.loads(stored.read_bytes())
    assert record == {k: v for k, v in registered.items() if k != "url"}
    assert re.fullmatch(r"registry/[0-9]{10}-[0-9a-f]{16}\.json", name)


def test_registering_the_same_upload_twice_writes_one_record(live, upload, s3) -> None:
    sent = upload(b"hello", filename="a.txt", content_type="text/plain")
    first, again = register(live, sent).json, register(live, sent).json
    assert without_signature(first["upload"]) == without_signature(again["upload"])
    assert len(registry_objects(s3)) == 1
    assert len(live.get("/uploads").json["uploads"]) == 1


def test_record_keys_sort_newest_first() -> None:
    earlier = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)
    later = earlier + timedelta(seconds=1)
    names = [registry.record_key("registry", "uploads/k", moment) for moment in (later, earlier)]
    assert names == sorted(names)


def test_the_list_reads_the_records_of_every_instance(config, s3, upload) -> None:
    """Two apps with the same secret share nothing but the bucket, and see the same list."""
    first = owner_client(dataclasses.replace(config, endpoint=s3.url, s3_timeout=5))
    second = owner_client(dataclasses.replace(config, endpoint=s3.url, s3_timeout=5))
    sent = upload(b"shared", filename="s.txt", content_type="text/plain")
    register(first, sent)
    assert [u["key"] for u in second.get("/uploads").json["uploads"]] == [sent["key"]]


def test_a_listing_is_kept_a_moment_and_dropped_by_this_instances_own_registration(
    config, s3, upload, monkeypatch
) -> None:
    monkeypatch.setattr(registry, "LISTING_SECONDS", 3600)
    first = owner_client(dataclasses.replace(config, endpoint=s3.url, s3_timeout=5))
    second = owner_client(dataclasses.replace(config, endpoint=s3.url, s3_timeout=5))
    assert second.get("/uploads").json["uploads"] == []
    sent = upload(b"cached", filename="c.txt", content_type="text/plain")
    register(first, sent)
    assert second.get("/uploads").json["uploads"] == []  # kept: another instance registered
    assert [u["key"] for u in first.get("/uploads").json["uploads"]] == [sent["key"]]
    monkeypatch.setattr(registry, "LISTING_SECONDS", 0)
    assert [u["key"] for u in second.get("/uploads").json["uploads"]] == [sent["key"]]


def test_the_list_pages_with_s3s_continuation_token(live, upload, monkeypatch) -> None:
    monkeypatch.setattr(registry, "RECENT_UPLOADS", 2)
    keys = []
    for number in range(3):
        sent = upload(b"x" * (number + 1), filename=f"{number}.txt", content_type="text/plain")
        register(live, sent)
        keys.append(sent["key"])
    first = live.get("/uploads").json
    second = live.get("/uploads", {"continuation": first["next"]}).json
    listed = [u["key"] for u in first["uploads"] + second["uploads"]]
    assert sorted(listed) == sorted(keys) and len(first["uploads"]) == 2
    assert second["next"] is None


def test_an_upload_deleted_from_s3_leaves_the_list(config, live, upload, s3, monkeypatch) -> None:
    monkeypatch.setattr(registry, "OBJECT_SEEN_SECONDS", 0)
    sent = upload(b"bye", filename="gone.txt", content_type="text/plain")
    register(live, sent)
    assert (
        s3_client.send(at(s3, config), "DELETE", sent["key"], now=datetime.now(UTC)).status == 204
    )
    assert live.get("/uploads").json["uploads"] == []


def test_a_broken_record_is_an_error_for_that_entry_only(config, live, upload, s3) -> None:
    sent = upload(b"ok", filename="ok.txt", content_type="text/plain")
    register(live, sent)
    broken = "registry/0000000000-0000000000000000.json"
    put_object(config, s3, broken, b"{not json")
    entries = live.get("/uploads").json["uploads"]
    assert [e.get("key") for e in entries] == [None, sent["key"]]
    assert entries[0] == {
        "record": broken,
        "error": "This entry of the upload list is broken: not valid JSON.",
    }
    assert "This entry of the upload list is broken" in live.get("/").text


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ("[]", "not a JSON object"),
        ('{"key": "uploads/x"}', "its filename is missing or not a str"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_records_that_are_not_ours_are_refused(record, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        registry.parse_record(record.encode(), "registry/1-x.json", "uploads")


def test_a_record_naming_an_object_outside_the_upload_prefix_is_refused() -> None:
    record = {"key": "registry/evil", "filename": "f", "size": 1, "etag": "e"}
    record.update(content_type="text/plain", created_at="2026-12-04T00:00:00Z")
    name = registry.record_key("registry", "registry/evil", APP_NOW)
    with pytest.raises(ValueError, match="did not record"):
        registry.parse_record(json.dumps(record).encode(), name, "uploads")


def test_a_registry_key_is_never_signed_for_upload(live) -> None:
    """The signing endpoint only chooses keys below UPLOAD_KEY_PREFIX, and a key token for any
    other key is refused, so no client can write or register into the registry."""
    form = ask_for_form(live).json
    assert form["key"].startswith("uploads/")
    forged = {"key": "registry/0-x.json", "etag": "e", "token": form["token"]}
    assert report(live, forged, 403).json == {"error": "This key was not issued by this server."}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"UPLOAD_REGISTRY_PREFIX": "uploads"}, "overlap"),
        ({"UPLOAD_REGISTRY_PREFIX": "uploads/registry"}, "overlap"),
        ({"UPLOAD_KEY_PREFIX": "registry/files"}, "overlap"),
    ],
)
def test_upload_and_registry_prefixes_must_not_overlap(environ, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_env(environ, None)


def at(s3: local_s3.LocalS3, config: Config) -> Config:
    """The app's configuration, pointed at this local S3: to edit the bucket by hand."""
    return dataclasses.replace(config, endpoint=s3.url, s3_timeout=5)


def put_object(config: Config, s3: local_s3.LocalS3, key: str, body: bytes) -> None:
    """An object written with the app's own credentials, as a hand edit of the bucket would."""
    assert (
        s3_client.send(at(s3, config), "PUT", key, body=body, now=datetime.now(UTC)).status == 200
    )


def test_migrate_copies_an_old_sqlite_list_into_the_bucket_once(config, s3, tmp_path, capsys):
    legacy = tmp_path / "uploads.sqlite3"
    with sqlite3.connect(legacy) as db:
        db.execute(
            "CREATE TABLE uploads (key TEXT PRIMARY KEY, filename TEXT NOT NULL, size INTEGER"
            " NOT NULL, etag TEXT NOT NULL, content_type TEXT NOT NULL, created_at TEXT NOT NULL)"
        )
        for number in range(3):
            row = (f"uploads/2025/01/0{number + 1}/{number}.txt", f"{number}.txt", 1, "e")
            db.execute(
                "INSERT INTO uploads VALUES (?, ?, ?, ?, 'text/plain', ?)",
                (*row, f"2025-01-0{number + 1}T00:00:00Z"),
            )
    db.close()
    target = dataclasses.replace(config, endpoint=s3.url, s3_timeout=5)
    assert registry.migrate_command(target, legacy) == 0
    assert capsys.readouterr().out == (
        f"Copied 3 uploads from {legacy} into s3://uploads/registry/; "
        "the file is now uploads.sqlite3.migrated.\n"
    )
    names = registry_objects(s3)
    assert len(names) == 3 and not legacy.exists()
    records = [
        json.loads(local_s3.stored_object(s3.config, "uploads", n).read_bytes()) for n in names
    ]
    assert [r["filename"] for r in records] == ["2.txt", "1.txt", "0.txt"]  # newest first
    assert registry.migrate_command(target, legacy) == 0
    assert capsys.readouterr().out == f"Nothing to migrate: there is no {legacy}.\n"


# ---- who sees which uploads --------------------------------------------------------------------


def test_the_list_of_every_upload_needs_upload_auth(config, s3, live, upload) -> None:
    sent = upload(b"private", filename="private-notes.txt", content_type="text/plain")
    register(live, sent)
    anyone = app_client(dataclasses.replace(config, endpoint=s3.url, s3_timeout=5))
    refused = anyone.get("/uploads", status=403)
    assert refused.json == {
        "error": "The list of every upload needs UPLOAD_AUTH; the page shows yours."
    }
    assert "private-notes.txt" not in anyone.get("/").text
    assert "private-notes.txt" in live.get("/").text


def ask_for_links(client: webtest.TestApp, uploads: object, status: int = 200):
    headers = {"X-Upload-Token": page_token(client)}
    return client.post_json("/uploads/links", {"uploads": uploads}, headers=headers, status=status)


def test_a_browser_renews_the_links_of_its_own_uploads_and_no_one_elses(client, clock) -> None:
    keys = tokens.Secrets.derive(APP_SECRET)
    mine, other, old = (f"uploads/2026/12/02/{name}.txt" for name in ("mine", "other", "old"))
    proofs = [
        {"key": mine, "token": tokens.key_token(keys, mine, APP_NOW)},
        {"key": other, "token": tokens.key_token(keys, mine, APP_NOW)},
        {"key": old, "token": tokens.key_token(keys, old, APP_NOW - timedelta(days=8))},
        {"key": 7, "token": None},
    ]
    links = ask_for_links(client, proofs).json["links"]
    assert list(links) == [mine]
    assert urlsplit(links[mine]).path == f"/uploads/{mine}"
    assert "X-Amz-Signature=" in links[mine]


@pytest.mark.parametrize(
    "uploads",
    [None, "uploads/x", {"key": "k"}, [{"key": "k", "token": "t"}] * 51],
    ids=["missing", "a-string", "an-object", "too-many"],
)
def test_a_links_request_that_is_not_a_short_list_is_refused(client, uploads) -> None:
    response = ask_for_links(client, uploads, status=400)
    assert response.json == {"error": 'The body must be {"uploads": [{"key", "token"}, ...]}.'}


def test_links_are_only_for_our_own_page(client) -> None:
    response = client.post_json("/uploads/links", {"uploads": []}, status=403)
    assert response.json["error"].startswith("The X-Upload-Token header is missing")


# ---- UPLOAD_METHOD=put: a presigned PUT carrying the limits a POST policy gives ---------------


@pytest.fixture
def put_client(config: Config, clock: Clock) -> webtest.TestApp:
    return app_client(dataclasses.replace(config, upload_method="put"), clock)


@pytest.fixture
def put_unlimited(config: Config, clock: Clock) -> webtest.TestApp:
    return app_client(dataclasses.replace(config, upload_method="put", rate_limit=None), clock)


def test_post_answer_names_its_method_and_keeps_its_fields(client) -> None:
    answer = ask_for_form(client).json
    assert (answer["method"], "headers" in answer) == ("POST", False)
    assert set(answer) == {"method", "url", "fields", "key", "expires_at", "token"}


def test_put_answer_is_a_url_for_the_key_signing_size_type_and_filename(put_client, config):
    answer = ask_for_form(put_client, filename="Holiday Photo.JPG", size="1234").json
    assert set(answer) == {
        "method",
        "url",
        "headers",
        "key",
        "expires_at",
        "token",
        "canonical_request",
        "string_to_sign",
    }
    assert answer["method"] == "PUT"
    assert KEY_FORMAT.fullmatch(answer["key"]) and answer["expires_at"] == "2026-12-02T01:07:03Z"
    url, query = answer["url"].split("?")
    assert url == f"{config.endpoint}/uploads/{answer['key']}"
    signed = parse_qs(query)
    assert signed["X-Amz-SignedHeaders"] == ["content-length;content-type;host;x-amz-meta-filename"]
    assert signed["X-Amz-Expires"] == ["300"]
    assert answer["headers"] == {
        "Content-Length": "1234",
        "Content-Type": "image/jpeg",
        "x-amz-meta-filename": "Holiday Photo.JPG",
    }
    assert "\ncontent-length:1234\ncontent-type:image/jpeg\n" in answer["canonical_request"]
    digest = hashlib.sha256(answer["canonical_request"].encode()).hexdigest()
    assert answer["string_to_sign"].endswith(f"/s3/aws4_request\n{digest}")
    keys = tokens.Secrets.derive(APP_SECRET)
    assert answer["token"] == tokens.key_token(keys, answer["key"], APP_NOW)


def test_put_signs_the_acl_when_one_is_set(config, clock) -> None:
    client = app_client(dataclasses.replace(config, upload_method="put", acl="private"), clock)
    answer = ask_for_form(client).json
    assert answer["headers"]["x-amz-acl"] == "private"
    assert "%3Bx-amz-acl%3B" in answer["url"]


@pytest.mark.parametrize("method", ["post", "put"])
@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"size": "10485761"}, 413, "The file is larger than the 10 MB limit."),
        ({"size": "0"}, 400, BAD_SIZE),
        ({"content_type": "text/html"}, 415, "Files of type text/html are not accepted here."),
        ({"filename": ""}, 400, NO_FILENAME),
    ],
)
def test_both_methods_refuse_the_same_requests(config, clock, method, params, status, message):
    client = app_client(dataclasses.replace(config, upload_method=method), clock)
    assert ask_for_form(client, status=status, **params).json == {"error": message}


def test_put_for_the_largest_allowed_file_signs_exactly_that_size(put_client) -> None:
    answer = ask_for_form(put_client, size="10485760").json
    assert answer["headers"]["Content-Length"] == "10485760"


def test_upload_method_must_be_post_or_put() -> None:
    with pytest.raises(ConfigError, match=r"UPLOAD_METHOD must be post or put, not 'patch'\."):
        Config.from_env({"UPLOAD_METHOD": "patch"})
    assert Config.from_env({"UPLOAD_METHOD": "PUT"}).upload_method == "put"


def send_put(url: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
    """A browser's PUT to url over real HTTP, from the app's page: (status, headers, body).
    Like a browser, it sends the body's own length, whatever Content-Length it is given."""
    headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
    target = urlsplit(url)
    connection = http.client.HTTPConnection(target.netloc, timeout=30)
    try:
        path = f"{target.path}?{target.query}"
        connection.request("PUT", path, body, {"Origin": APP_ORIGIN, **headers})
        reply = connection.getresponse()
        return reply.status, reply.headers, reply.read()
    finally:
        connection.close()


@pytest.fixture
def live_put(config: Config, s3: local_s3.LocalS3) -> webtest.TestApp:
    return owner_client(dataclasses.replace(config, endpoint=s3.url, upload_method="put"))


def test_presigned_put_is_accepted_by_s3_then_registered_and_listed(live_put) -> None:
    content = "Bonjour, résumé\n".encode()
    answer = ask_for_form(
        live_put, filename="Résumé.txt", content_type="text/plain", size=str(len(content))
    ).json
    status, headers, _ = send_put(answer["url"], answer["headers"], content)
    assert status == 200
    assert headers["ETag"] == f'"{hashlib.md5(content).hexdigest()}"'
    assert headers["Access-Control-Expose-Headers"] == "ETag, Location"
    report = {"key": answer["key"], "etag": headers["ETag"], "token": answer["token"]}
    registered = live_put.post_json(
        "/uploads", report, headers={"X-Upload-Token": page_token(live_put)}
    )
    assert registered.json["upload"]["filename"] == "Résumé.txt"
    assert registered.json["upload"]["content_type"] == "text/plain"
    (listed,) = live_put.get("/uploads").json["uploads"]
    assert listed["key"] == answer["key"] and listed["size"] == len(content)


def s3_error(body: bytes) -> tuple[str, str]:
    root = ET.fromstring(body)
    return root.findtext("Code"), root.findtext("CanonicalRequest") or ""


SIGNED_CONTENT = b"01234567"


@pytest.mark.parametrize(
    ("header", "content", "key", "in_canonical_request"),
    [
        ({}, b"0123456789", None, "content-length:10\n"),
        ({}, b"0123", None, "content-length:4\n"),
        ({"Content-Type": "text/html"}, SIGNED_CONTENT, None, "content-type:text/html\n"),
        ({"x-amz-meta-filename": "b.txt"}, SIGNED_CONTENT, None, "x-amz-meta-filename:b.txt\n"),
        ({}, SIGNED_CONTENT, "uploads/other.txt", "PUT\n/uploads/uploads/other.txt\n"),
    ],
)
def test_s3_refuses_a_put_other_than_the_signed_one(
    live_put, s3, header, content, key, in_canonical_request
) -> None:
    """Length, type, metadata and key are in the signature: S3 computes another canonical
    request, answers SignatureDoesNotMatch with it, and stores nothing."""
    answer = ask_for_form(live_put, filename="a.txt", content_type="text/plain", size="8").json
    url = answer["url"].replace(answer["key"], key or answer["key"])
    status, _, body = send_put(url, {**answer["headers"], **header}, content)
    assert status == 403
    error = ET.fromstring(body)
    assert error.findtext("Code") == "SignatureDoesNotMatch"
    assert in_canonical_request in error.findtext("CanonicalRequest")
    assert local_s3.list_objects(s3.config) == []


def test_s3_preflight_allows_a_put_with_the_signed_headers(live_put, s3) -> None:
    answer = ask_for_form(live_put).json
    target = urlsplit(answer["url"])
    connection = http.client.HTTPConnection(target.netloc, timeout=10)
    requested = "content-type,x-amz-meta-filename"
    connection.request(
        "OPTIONS",
        target.path,
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": requested,
        },
    )
    reply = connection.getresponse()
    connection.close()
    assert reply.status == 200
    assert reply.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "PUT" in reply.headers["Access-Control-Allow-Methods"].split(", ")
    assert reply.headers["Access-Control-Allow-Headers"] == requested


def test_put_answer_holds_no_secret_nor_signing_key(put_client, config) -> None:
    """The canonical request and string to sign are public: S3 itself sends them back."""
    text = ask_for_form(put_client).text
    key = signer.signing_key(config.credentials.secret_key, "20261202", config.region)
    assert config.credentials.secret_key not in text
    assert key.hex() not in text


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.dictionaries(st.sampled_from(["filename", "content_type", "size"]), st.text()))
def test_any_put_signing_request_gets_an_answer_never_a_500(put_unlimited, query) -> None:
    client = put_unlimited
    headers = {"X-Upload-Token": page_token(client)}
    response = client.get("/s3_credentials", query, headers=headers, expect_errors=True)
    assert response.status_int in (200, 400, 413, 415)
    assert response.content_type == "application/json"


def test_page_says_what_the_server_signs(client, put_client) -> None:
    words = lambda response: " ".join(response.html.find("header").get_text().split())  # noqa: E731
    assert "only signs a short-lived POST policy;" in words(client.get("/"))
    assert "only signs a short-lived presigned PUT URL;" in words(put_client.get("/"))


def test_presigned_put_with_an_acl_stores_the_signed_acl(config, s3) -> None:
    """S3_ACL travels as a signed x-amz-acl header: public-read makes the object readable
    without a signature, as on S3."""
    public = dataclasses.replace(config, endpoint=s3.url, upload_method="put", acl="public-read")
    client = app_client(public)
    answer = ask_for_form(client, filename="a.txt", content_type="text/plain", size="5").json
    assert send_put(answer["url"], answer["headers"], b"hello")[0] == 200
    with urllib.request.urlopen(f"{s3.url}/uploads/{answer['key']}", timeout=5) as reply:
        assert reply.read() == b"hello"


# ---- active content: stored and served as a download ------------------------------------------


def get_object(config: Config, key: str) -> http.client.HTTPResponse:
    url = signer.object_url(config.bucket, key, config.region, config.endpoint)
    presigned = signer.presign_url(config.credentials, "GET", url, config.region)
    return urllib.request.urlopen(presigned, timeout=5)


def test_an_allowed_svg_is_stored_with_content_disposition_attachment(config, s3, post_to_s3):
    active = dataclasses.replace(
        config, endpoint=s3.url, allow_active_types=True, allowed_types=("image/*",)
    )
    client = app_client(active)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    form = ask_for_form(client, filename="a.svg", content_type="image/svg+xml", size=str(len(svg)))
    assert form.json["key"].endswith(".svg")
    status, _, body = post_to_s3(form.json["url"], form.json["fields"], svg)
    assert status == 201, body
    with get_object(active, form.json["key"]) as stored:
        assert stored.headers["Content-Disposition"] == "attachment"
        assert stored.headers["Content-Type"] == "image/svg+xml"


def test_s3_refuses_the_svg_form_without_its_content_disposition(config, s3, post_to_s3):
    active = dataclasses.replace(config, endpoint=s3.url, allow_active_types=True)
    form = ask_for_form(app_client(active), content_type="image/svg+xml", size="3").json
    fields = {
        name: value for name, value in form["fields"].items() if name != "Content-Disposition"
    }
    status, _, body = post_to_s3(form["url"], fields, b"<s>")
    assert status == 403 and b"Content-Disposition" in body


def test_the_no_js_upload_is_served_as_a_download(live, post_to_s3, config, s3) -> None:
    form = live.get("/").html.find("form", attrs={"data-accept": "application/pdf"})
    fields = {field["name"]: field["value"] for field in form.find_all("input", type="hidden")}
    assert fields["Content-Disposition"] == "attachment"
    html = b"<html><script>alert(document.domain)</script></html>"
    status, _, _ = post_to_s3(form["action"], fields, html, "page.html")
    assert status == 303
    with get_object(dataclasses.replace(config, endpoint=s3.url), fields["key"]) as stored:
        assert stored.headers["Content-Disposition"] == "attachment"
        assert stored.read() == html
