"""Large files in parts: the app's multipart endpoints (WebTest) against a real local S3."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
import webtest
from conftest import S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY, app_config, page_config
from hypothesis import given
from hypothesis import strategies as st

import local_s3
import parts
import s3_client
import s3_rules
import server
import signer
import tokens

MiB = s3_rules.MiB


def app_against(endpoint: str):
    """The app against the S3 at `endpoint`, parts of S3's minimum, the real clock."""
    credentials = signer.Credentials(S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY)
    return app_config(
        credentials=credentials,
        endpoint=endpoint,
        s3_timeout=5,
        rate_limit=None,
        part_size=5 * MiB,
        max_bytes=64 * MiB,
    )


def client_of(config) -> webtest.TestApp:
    return webtest.TestApp(server.create_app(config), extra_environ={"HTTP_HOST": "localhost"})


@pytest.fixture
def config(running_s3):
    return app_against(running_s3.url)


@pytest.fixture
def client(config) -> webtest.TestApp:
    return client_of(config)


@pytest.fixture
def s3_listing_parts(start_s3, monkeypatch):
    """s3_listing_parts(rewrite) -> the app's config against a real local S3 whose ListParts
    answers go through rewrite(root, parts) first: the answer's XML root, changed in place, and
    its <Part> elements. S3-compatible servers differ in what a listing carries; the app must
    read any listing the protocol allows."""
    real_app = local_s3.create_app

    def listing(rewrite):
        def create_app(s3_config):
            s3 = real_app(s3_config)

            def rewritten(environ, start_response):
                query = environ["QUERY_STRING"]
                if environ["REQUEST_METHOD"] != "GET" or "uploadId=" not in query:
                    return s3(environ, start_response)
                status = []
                body = b"".join(s3(environ, lambda answer, *_: status.append(answer)))
                root = ET.fromstring(body)
                rewrite(root, [part for part in root if part.tag.endswith("}Part")])
                start_response(status[0], [("Content-Type", "application/xml")])
                return [ET.tostring(root)]

            return rewritten

        monkeypatch.setattr(local_s3, "create_app", create_app)
        return app_against(start_s3().url)

    return listing


def element(root, name: str):
    return next(child for child in root if child.tag.endswith(name))


def one_part_per_page_without_next_marker(root, listed) -> None:
    """Truncated after the first part, with no NextPartNumberMarker: "after the last listed"."""
    for part in listed[1:]:
        root.remove(part)
    element(root, "IsTruncated").text = "true" if len(listed) > 1 else "false"
    root.remove(element(root, "NextPartNumberMarker"))


def truncated_for_ever(root, listed) -> None:
    element(root, "IsTruncated").text = "true"


def call(client: webtest.TestApp, path: str, body: object, status: int = 200):
    token = page_config(client.get("/").text)["pageToken"]
    headers = {"X-Upload-Token": token}
    return client.post_json(path, body, headers=headers, status=status)


def start(client: webtest.TestApp, size: int, **fields) -> dict:
    request = {"filename": "big.bin", "content_type": "application/pdf", "size": size, **fields}
    return call(client, "/multipart", request).json


def proof(started: dict) -> dict:
    return {name: started[name] for name in ("key", "upload_id", "size", "part_size", "token")}


def put(url: str, body: bytes) -> tuple[int, str]:
    """A browser's PUT of one part: its status and ETag (or S3's error code)."""
    request = urllib.request.Request(url, body, method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers["ETag"]
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode().partition("<Code>")[2].partition("<")[0]


def send_parts(client: webtest.TestApp, started: dict, content: bytes, numbers=None) -> None:
    numbers = numbers or list(range(1, started["parts"] + 1))
    urls = call(client, "/multipart/urls", {**proof(started), "parts": numbers}).json["urls"]
    size = started["part_size"]
    for number in numbers:
        chunk = content[(number - 1) * size : number * size]
        assert put(urls[str(number)], chunk)[0] == 200


def in_progress(config) -> list[str]:
    pending = s3_client.list_multipart_uploads(config, "", datetime.now(UTC))
    return [upload.upload_id for upload in pending]


def s3_multipart_etag(content: bytes, part_size: int) -> str:
    """S3's ETag of a multipart object: the MD5 of the parts' binary MD5s, then -N."""
    chunks = [content[i : i + part_size] for i in range(0, len(content), part_size)]
    digests = b"".join(hashlib.md5(chunk).digest() for chunk in chunks)
    return f"{hashlib.md5(digests).hexdigest()}-{len(chunks)}"


# ---- the plan ---------------------------------------------------------------------------------


@given(size=st.integers(1, s3_rules.MAX_OBJECT_BYTES))
def test_every_plan_fits_s3s_part_limits_and_adds_up_to_the_file(size) -> None:
    plan = parts.plan_parts(size, 8 * MiB)
    assert plan.count <= s3_rules.MAX_PARTS
    assert s3_rules.MIN_PART_BYTES <= plan.part_size <= s3_rules.MAX_PART_BYTES
    assert 0 < plan.length(plan.count) <= plan.part_size
    assert (plan.count - 1) * plan.part_size + plan.length(plan.count) == size


def test_a_five_tib_file_gets_parts_of_525_mib() -> None:
    plan = parts.plan_parts(s3_rules.MAX_OBJECT_BYTES, 8 * MiB)
    assert (plan.part_size, plan.count) == (525 * MiB, 9987)


# ---- the flow ---------------------------------------------------------------------------------


def test_a_file_in_parts_is_one_object_with_s3s_etag_registered_and_listed(
    client, config, running_s3
) -> None:
    content = bytes(range(256)) * (44 * 1024)  # 11 MiB: two full parts and one short
    started = start(client, len(content), filename="Big Report.pdf")
    assert (started["parts"], started["part_size"], started["parallel"]) == (3, 5 * MiB, 4)
    assert started["key"].startswith("uploads/") and started["key"].endswith(".pdf")
    send_parts(client, started, content)

    done = call(client, "/multipart/complete", proof(started), status=201).json["upload"]

    assert done["etag"] == s3_multipart_etag(content, 5 * MiB)
    assert (done["filename"], done["size"], done["content_type"]) == (
        "Big Report.pdf",
        len(content),
        "application/pdf",
    )
    with urllib.request.urlopen(done["url"], timeout=10) as download:
        assert download.read() == content
    assert in_progress(config) == []


def test_a_part_of_another_length_than_signed_is_refused_by_s3(client) -> None:
    started = start(client, 6 * MiB)
    url = call(client, "/multipart/urls", {**proof(started), "parts": [2]}).json["urls"]["2"]
    assert put(url, b"x" * 10) == (403, "SignatureDoesNotMatch")
    assert put(url, b"x" * MiB)[0] == 200


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        ([3], "This upload has parts 1 to 2 only."),
        ([0], "This upload has parts 1 to 2 only."),
        (["1"], "This upload has parts 1 to 2 only."),
        ([], "parts must be a list of 1 to 100 numbers."),
        ("1", "parts must be a list of 1 to 100 numbers."),
    ],
)
def test_only_planned_part_numbers_are_signed(client, numbers, message) -> None:
    started = start(client, 6 * MiB)
    body = {**proof(started), "parts": numbers}
    assert call(client, "/multipart/urls", body, status=400).json == {"error": message}


@pytest.mark.parametrize(
    "tamper",
    [
        {"size": 64 * MiB},
        {"part_size": 6 * MiB},
        {"upload_id": "someone-elses-upload"},
        {"key": "uploads/2026/01/01/other.pdf"},
        {"token": "1." + "0" * 64},
    ],
    ids=["size", "part-size", "upload-id", "key", "token"],
)
def test_an_upload_this_server_did_not_start_as_such_is_refused(client, config, tamper) -> None:
    started = start(client, 6 * MiB)
    body = {**proof(started), **tamper}
    for path in ("/multipart/urls", "/multipart/parts", "/multipart/complete", "/multipart/abort"):
        response = call(client, path, {**body, "parts": [1]}, status=403)
        assert response.json == {"error": "This multipart upload was not started by this server."}
    assert in_progress(config) == [started["upload_id"]]


def test_completing_with_a_part_missing_is_refused_and_changes_nothing(client, config) -> None:
    content = b"p" * (11 * MiB)
    started = start(client, len(content))
    send_parts(client, started, content, numbers=[1, 3])
    response = call(client, "/multipart/complete", proof(started), status=409)
    assert response.json == {"error": "1 of 3 parts are missing in S3 (first: 2)."}
    assert in_progress(config) == [started["upload_id"]]
    assert call(client, "/multipart/parts", proof(started)).json["parts"] == [
        {"number": 1, "size": 5 * MiB, "etag": f'"{hashlib.md5(content[: 5 * MiB]).hexdigest()}"'},
        {"number": 3, "size": MiB, "etag": f'"{hashlib.md5(content[10 * MiB :]).hexdigest()}"'},
    ]
    send_parts(client, started, content, numbers=[2])
    assert call(client, "/multipart/complete", proof(started), status=201).json["upload"]


def test_a_part_list_in_pages_without_next_markers_is_read_to_its_end(s3_listing_parts):
    content = b"m" * (11 * MiB)
    client = client_of(s3_listing_parts(one_part_per_page_without_next_marker))
    started = start(client, len(content))
    send_parts(client, started, content)
    done = call(client, "/multipart/complete", proof(started), status=201).json["upload"]
    assert done["etag"] == s3_multipart_etag(content, 5 * MiB)


def test_a_part_list_that_never_ends_is_a_clear_error_not_an_endless_loop(s3_listing_parts):
    content = b"e" * (6 * MiB)
    config = s3_listing_parts(truncated_for_ever)
    client = client_of(config)
    started = start(client, len(content))
    send_parts(client, started, content)
    response = call(client, "/multipart/complete", proof(started), status=502)
    assert response.json == {"error": "S3 said its list goes on, but not where from."}
    assert in_progress(config) == [started["upload_id"]]


def test_cancel_aborts_the_upload_and_s3_keeps_no_part(client, config) -> None:
    content = b"c" * (6 * MiB)
    started = start(client, len(content))
    send_parts(client, started, content, numbers=[1])
    assert call(client, "/multipart/abort", proof(started)).json == {"aborted": started["key"]}
    assert in_progress(config) == []
    response = call(client, "/multipart/parts", proof(started), status=404)
    assert response.json == {
        "error": "This upload is not in progress in S3 (finished or cancelled)."
    }


def test_a_file_over_the_limit_is_refused_before_s3_is_asked(client, config) -> None:
    response = call(
        client,
        "/multipart",
        {"filename": "f.pdf", "content_type": "application/pdf", "size": 64 * MiB + 1},
        status=413,
    )
    assert response.json == {"error": "The file is larger than the 64 MB limit."}
    assert in_progress(config) == []


def test_cleanup_aborts_uploads_older_than_a_day_and_keeps_the_others(client, config) -> None:
    started = [start(client, 6 * MiB)["upload_id"] for _ in range(2)]
    now = datetime.now(UTC)
    assert parts.cleanup(config, now) == 0
    assert sorted(in_progress(config)) == sorted(started)
    assert parts.cleanup(config, now, older_than=timedelta(0)) == 2
    assert in_progress(config) == []


def test_multipart_tokens_are_not_key_tokens() -> None:
    keys = tokens.Secrets.derive("secret")
    now = datetime(2026, 12, 4, tzinfo=UTC)
    token = tokens.multipart_token(keys, ("k", "u", "1", "2"), now)
    assert not tokens.key_token_valid(keys, "k\nu\n1\n2", token, now)
