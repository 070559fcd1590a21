"""The local S3's multipart uploads, as S3 runs them: CreateMultipartUpload, UploadPart,
ListParts, CompleteMultipartUpload, AbortMultipartUpload and ListMultipartUploads, through the
WSGI app (WebTest) and over real HTTP with botocore, the reference client.

Every refused request answers with S3's status, Code and Message and changes nothing; the object
appears only at Complete, whole, with S3's multipart ETag; nothing is left behind.
"""

import base64
import hashlib
import http.client
import json
import os
import tracemalloc
import xml.etree.ElementTree as ET
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import botocore.exceptions
import pytest
from conftest import (
    S3_TEST_ORIGIN,
    boto3_client,
    connect,
    error_of,
    presigned,
    signed_s3_request,
    wait_for,
)

import local_s3
import signer

KEY = "big/video.mp4"
FIVE_MIB = 5 * 1024 * 1024  # S3's smallest part but the last: 5,242,880 bytes
S3_XMLNS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
UNKNOWN_ID = "000661c8a8432d3d" + "A" * 43  # shaped like an upload id, never given


def s3_etag(parts: list[bytes]) -> str:
    """S3's ETag of a multipart object, computed here independently of local_s3: the MD5 of
    the parts' binary MD5s, then "-" and the number of parts."""
    digests = b"".join(hashlib.md5(part).digest() for part in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def completion(parts: list[tuple[Any, str]]) -> bytes:
    body = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in parts)
    root = f'CompleteMultipartUpload xmlns="{S3_XMLNS[1:-1]}"'
    return f"<{root}>{body}</CompleteMultipartUpload>".encode()


def xml_of(response) -> dict[str, str]:
    root = ET.fromstring(response.body)
    return {child.tag.removeprefix(S3_XMLNS): child.text or "" for child in root}


def listed(response, element: str) -> list[dict[str, str]]:
    root = ET.fromstring(response.body)
    return [
        {child.tag.removeprefix(S3_XMLNS): child.text or "" for child in item}
        for item in root.iter(S3_XMLNS + element)
    ]


def s3_says(response, code: str) -> dict[str, str]:
    """Asserts S3's status, Code and Message for `code`; returns the error's other elements."""
    found, message, elements = error_of(response)
    assert (response.status_int, found, message) == (
        local_s3.ERRORS[code].status,
        code,
        local_s3.ERRORS[code].message,
    )
    return elements


def upload_folders(config) -> list:
    return list((config.data_dir / "multipart").iterdir())


@dataclass
class S3:
    """The local S3 under WebTest, with requests signed in their Authorization header."""

    app: Any
    credentials: Any
    now: Any
    config: Any

    def request(self, method, query="", body=b"", headers=None, key=KEY):
        path = f"/uploads/{quote(key)}{query}"
        return signed_s3_request(self.app, self.credentials, self.now, method, path, body, headers)

    def create(self, key=KEY, headers=None) -> str:
        response = self.request("POST", "?uploads", headers=headers, key=key)
        assert response.status_int == 200, response.body
        return xml_of(response)["UploadId"]

    def put_part(self, upload_id, number, body, key=KEY, headers=None):
        query = f"?partNumber={number}&uploadId={quote(str(upload_id))}"
        return self.request("PUT", query, body, headers, key=key)

    def complete(self, upload_id, parts, key=KEY, body=None):
        xml = completion(parts) if body is None else body
        return self.request("POST", f"?uploadId={quote(upload_id)}", xml, key=key)

    def list_parts(self, upload_id, query="", key=KEY):
        return self.request("GET", f"?uploadId={quote(upload_id)}{query}", key=key)

    def abort(self, upload_id, key=KEY):
        return self.request("DELETE", f"?uploadId={quote(upload_id)}", key=key)

    def list_uploads(self, query=""):
        path = f"/uploads?uploads{query}"
        return signed_s3_request(self.app, self.credentials, self.now, "GET", path)

    def uploaded(self, parts: list[bytes], key=KEY) -> tuple[str, list[tuple[int, str]]]:
        """A new upload with `parts` sent as parts 1, 2, ...: its id and (number, ETag)s."""
        upload_id = self.create(key)
        etags = []
        for number, data in enumerate(parts, start=1):
            response = self.put_part(upload_id, number, data, key=key)
            assert response.status_int == 200, response.body
            etags.append((number, response.headers["ETag"]))
        return upload_id, etags


@pytest.fixture
def s3(s3_app, s3_credentials, s3_now, s3_config):
    return S3(s3_app, s3_credentials, s3_now, s3_config)


def assert_no_object_and_nothing_left(config):
    assert local_s3.list_objects(config) == []
    assert local_s3.leftover_files(config) == []


# --- CreateMultipartUpload ----------------------------------------------------------------------


def test_create_answers_bucket_key_and_an_unguessable_upload_id(s3):
    first = s3.request("POST", "?uploads")
    second_id = s3.create()

    assert first.status_int == 200
    assert first.headers["Content-Type"] == "application/xml"
    assert ET.fromstring(first.body).tag == S3_XMLNS + "InitiateMultipartUploadResult"
    answer = xml_of(first)
    assert (answer["Bucket"], answer["Key"]) == ("uploads", KEY)
    assert answer["UploadId"] != second_id
    assert len(answer["UploadId"]) >= 59  # 32 random bytes, and the time
    assert local_s3.list_objects(s3.config) == []


def test_create_keeps_type_metadata_and_acl_for_the_completed_object(s3):
    headers = {
        "content-type": "video/mp4",
        "x-amz-meta-album": "holidays",
        "x-amz-acl": "public-read",
        "cache-control": "max-age=60",
    }
    upload_id = s3.create(headers=headers)
    etag = s3.put_part(upload_id, 1, b"frames").headers["ETag"]
    assert s3.complete(upload_id, [(1, etag)]).status_int == 200

    stored = local_s3.stored_object(s3.config, "uploads", KEY)
    assert (stored.content_type, stored.acl) == ("video/mp4", "public-read")
    assert stored.metadata == {"x-amz-meta-album": "holidays"}
    assert stored.headers == {"Cache-Control": "max-age=60"}
    assert s3.app.get(f"/uploads/{KEY}").body == b"frames"  # public-read: no signature needed


def test_create_naming_an_acl_on_a_bucket_with_acls_disabled_is_refused(
    make_s3_app, s3_credentials, s3_now, s3_config
):
    app = make_s3_app(object_ownership="BucketOwnerEnforced")
    owner = S3(app, s3_credentials, s3_now, s3_config)

    response = owner.request("POST", "?uploads", headers={"x-amz-acl": "public-read"})
    s3_says(response, "AccessControlListNotSupported")
    assert owner.request("POST", "?uploads").status_int == 200
    assert local_s3.multipart_uploads(s3_config, "uploads")[0].key == KEY


def test_create_by_presigned_url_is_accepted(s3):
    url = presigned(f"http://localhost/uploads/{KEY}?uploads=", s3.credentials, s3.now, "POST")
    response = s3.app.request(url, method="POST", headers={"Host": "localhost"})

    assert response.status_int == 200
    assert xml_of(response)["Key"] == KEY


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/uploads/{KEY}?uploads"),
        ("PUT", f"/uploads/{KEY}?partNumber=1&uploadId={UNKNOWN_ID}"),
        ("GET", f"/uploads/{KEY}?uploadId={UNKNOWN_ID}"),
        ("POST", f"/uploads/{KEY}?uploadId={UNKNOWN_ID}"),
        ("DELETE", f"/uploads/{KEY}?uploadId={UNKNOWN_ID}"),
        ("GET", "/uploads?uploads"),
    ],
)
def test_unsigned_multipart_requests_are_access_denied(s3_app, method, path):
    body = b"x" if method in ("PUT", "POST") else b""
    response = s3_app.request(path, method=method, body=body, status="*")
    s3_says(response, "AccessDenied")


@pytest.mark.parametrize(
    ("action", "method", "query"),
    [
        ("s3:PutObject", "POST", "?uploads"),
        ("s3:AbortMultipartUpload", "DELETE", f"?uploadId={UNKNOWN_ID}"),
        ("s3:ListMultipartUploadParts", "GET", f"?uploadId={UNKNOWN_ID}"),
    ],
)
def test_credentials_without_the_permission_are_access_denied(
    make_s3_app, s3_credentials, s3_now, s3_config, action, method, query
):
    app = make_s3_app(denied_actions=frozenset({action}))
    s3_says(S3(app, s3_credentials, s3_now, s3_config).request(method, query), "AccessDenied")


# --- UploadPart ---------------------------------------------------------------------------------


def test_upload_part_answers_the_md5_etag_and_stores_no_object(s3):
    upload_id = s3.create()
    response = s3.put_part(upload_id, 1, b"first part")

    assert (response.status_int, response.body) == (200, b"")
    assert response.headers["ETag"] == md5_etag(b"first part")
    assert local_s3.list_objects(s3.config) == []
    s3_says(
        s3.app.get(
            presigned(f"http://localhost/uploads/{KEY}", s3.credentials, s3.now), status="*"
        ),
        "NoSuchKey",
    )


def test_upload_part_by_presigned_url_is_accepted(s3):
    upload_id = s3.create()
    url = f"http://localhost/uploads/{KEY}?partNumber=3&uploadId={upload_id}"
    response = s3.app.put(
        presigned(url, s3.credentials, s3.now, "PUT"), b"by URL", headers={"Host": "localhost"}
    )

    assert response.headers["ETag"] == md5_etag(b"by URL")
    assert [p["PartNumber"] for p in listed(s3.list_parts(upload_id), "Part")] == ["3"]


@pytest.mark.parametrize("number", ["0", "10001", "-1", "1.5", "one", "", "\uff11"])
def test_part_number_outside_1_to_10000_is_invalid_argument(s3, number):
    upload_id = s3.create()
    response = s3.put_part(upload_id, quote(number), b"data")

    code, message, elements = error_of(response)
    assert (response.status_int, code) == (400, "InvalidArgument")
    assert message == "Part number must be an integer between 1 and 10000, inclusive"
    assert (elements["ArgumentName"], elements["ArgumentValue"]) == ("partNumber", number)
    assert listed(s3.list_parts(upload_id), "Part") == []


def test_part_numbers_1_and_10000_are_accepted(s3):
    upload_id = s3.create()
    assert s3.put_part(upload_id, 1, b"a").status_int == 200
    assert s3.put_part(upload_id, 10000, b"z").status_int == 200


@pytest.mark.parametrize(
    "upload_id",
    [UNKNOWN_ID, "", "../../../etc/passwd", "..", "x" * 59, UNKNOWN_ID + "/../.."],
)
def test_a_part_for_an_unknown_upload_is_no_such_upload_and_stores_nothing(s3, upload_id):
    response = s3.put_part(upload_id, 1, b"data")

    assert s3_says(response, "NoSuchUpload")["UploadId"] == upload_id
    assert_no_object_and_nothing_left(s3.config)
    assert upload_folders(s3.config) == []


def test_an_upload_id_is_no_such_upload_for_another_key(s3):
    upload_id = s3.create(key="mine.bin")

    s3_says(s3.put_part(upload_id, 1, b"data", key="theirs.bin"), "NoSuchUpload")
    s3_says(s3.list_parts(upload_id, key="theirs.bin"), "NoSuchUpload")
    s3_says(s3.complete(upload_id, [(1, '"x"')], key="theirs.bin"), "NoSuchUpload")
    s3_says(s3.abort(upload_id, key="theirs.bin"), "NoSuchUpload")
    assert local_s3.multipart_uploads(s3.config, "uploads")[0].upload_id == upload_id


def test_a_part_over_5_gib_is_entity_too_large_before_it_is_read(s3):
    upload_id = s3.create()
    url = presigned(
        f"http://localhost/uploads/{KEY}?partNumber=1&uploadId={upload_id}",
        s3.credentials,
        s3.now,
        "PUT",
    )
    too_big = 5 * 1024**3 + 1
    response = s3.app.request(
        url,
        method="PUT",
        headers={"Host": "localhost"},
        body=b"",
        content_length=too_big,
        status="*",
    )
    elements = s3_says(response, "EntityTooLarge")
    assert (elements["ProposedSize"], elements["MaxSizeAllowed"]) == (str(too_big), "5368709120")
    assert listed(s3.list_parts(upload_id), "Part") == []


def test_a_part_with_another_content_md5_is_bad_digest_and_not_kept(s3):
    upload_id = s3.create()
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    response = s3.put_part(upload_id, 1, b"data", headers={"content-md5": wrong})

    s3_says(response, "BadDigest")
    assert listed(s3.list_parts(upload_id), "Part") == []
    assert local_s3.leftover_files(s3.config) == []


def test_a_part_with_its_right_content_md5_is_kept(s3):
    upload_id = s3.create()
    right = base64.b64encode(hashlib.md5(b"data").digest()).decode()
    assert s3.put_part(upload_id, 1, b"data", headers={"content-md5": right}).status_int == 200


@pytest.mark.parametrize(
    ("checksum", "verdict"),
    [
        (base64.b64encode(zlib.crc32(b"data").to_bytes(4, "big")).decode(), "kept"),
        (base64.b64encode(zlib.crc32(b"other").to_bytes(4, "big")).decode(), "BadDigest"),
        ("not base64!", "InvalidRequest"),
    ],
)
def test_a_part_checksum_header_is_verified_like_a_puts(s3, checksum, verdict):
    upload_id = s3.create()
    headers = {"x-amz-checksum-crc32": checksum}
    response = s3.put_part(upload_id, 1, b"data", headers=headers)

    if verdict == "kept":
        assert response.status_int == 200
        assert response.headers["x-amz-checksum-crc32"] == checksum
        assert len(listed(s3.list_parts(upload_id), "Part")) == 1
    else:
        assert (response.status_int, error_of(response)[0]) == (400, verdict)
        assert listed(s3.list_parts(upload_id), "Part") == []


def test_a_part_whose_body_differs_from_the_signed_hash_is_refused(s3):
    upload_id = s3.create()
    path = f"/uploads/{KEY}?partNumber=1&uploadId={upload_id}"
    headers = {"x-amz-content-sha256": hashlib.sha256(b"signed").hexdigest()}
    signed = signed_s3_request(s3.app, s3.credentials, s3.now, "PUT", path, b"signed", headers)
    assert signed.status_int == 200
    sneaky = s3.app.request(
        path,
        method="PUT",
        body=b"sneaky",
        status="*",
        headers={**dict(signed.request.headers), "Content-Length": "6"},
    )

    s3_says(sneaky, "XAmzContentSHA256Mismatch")
    assert [p["ETag"] for p in listed(s3.list_parts(upload_id), "Part")] == [md5_etag(b"signed")]


def test_a_part_sent_again_replaces_the_earlier_one(s3):
    upload_id = s3.create()
    s3.put_part(upload_id, 1, b"first try")
    s3.put_part(upload_id, 1, b"second, longer try")

    parts = listed(s3.list_parts(upload_id), "Part")
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [
        ("1", md5_etag(b"second, longer try"), "18")
    ]
    assert local_s3.leftover_files(s3.config) == []
    blobs = [p for p in upload_folders(s3.config)[0].iterdir() if p.suffix == ".bin"]
    assert [blob.read_bytes() for blob in blobs] == [b"second, longer try"]


# --- ListParts ----------------------------------------------------------------------------------


def test_list_parts_reports_number_etag_size_and_time_in_order(s3):
    upload_id = s3.create()
    for number, data in [(3, b"ccc"), (1, b"a"), (2, b"bb")]:
        s3.put_part(upload_id, number, data)
    response = s3.list_parts(upload_id)

    assert ET.fromstring(response.body).tag == S3_XMLNS + "ListPartsResult"
    head = xml_of(response)
    assert (head["Bucket"], head["Key"], head["UploadId"]) == ("uploads", KEY, upload_id)
    assert (head["IsTruncated"], head["MaxParts"], head["PartNumberMarker"]) == (
        "false",
        "1000",
        "0",
    )
    assert listed(response, "Part") == [
        {
            "PartNumber": str(n),
            "LastModified": "2026-01-01T12:00:00.000Z",
            "ETag": md5_etag(d),
            "Size": str(len(d)),
        }
        for n, d in [(1, b"a"), (2, b"bb"), (3, b"ccc")]
    ]


def test_list_parts_pages_with_max_parts_and_part_number_marker(s3):
    upload_id = s3.create()
    for number in range(1, 6):
        s3.put_part(upload_id, number, b"x" * number)

    first = s3.list_parts(upload_id, "&max-parts=2")
    second = s3.list_parts(upload_id, "&max-parts=2&part-number-marker=2")
    last = s3.list_parts(upload_id, "&max-parts=2&part-number-marker=4")

    assert [p["PartNumber"] for p in listed(first, "Part")] == ["1", "2"]
    assert (xml_of(first)["IsTruncated"], xml_of(first)["NextPartNumberMarker"]) == ("true", "2")
    assert [p["PartNumber"] for p in listed(second, "Part")] == ["3", "4"]
    assert [p["PartNumber"] for p in listed(last, "Part")] == ["5"]
    assert xml_of(last)["IsTruncated"] == "false"


@pytest.mark.parametrize(
    "query", ["&max-parts=-1", "&max-parts=x", "&part-number-marker=one", "&max-parts=2147483648"]
)
def test_list_parts_with_a_bad_argument_is_invalid_argument(s3, query):
    upload_id = s3.create()
    code, _, elements = error_of(s3.list_parts(upload_id, query))
    assert code == "InvalidArgument"
    assert elements["ArgumentName"] == query[1:].partition("=")[0]


# --- CompleteMultipartUpload --------------------------------------------------------------------


def test_complete_makes_one_object_with_s3s_multipart_etag(s3):
    parts = [b"a" * FIVE_MIB, b"b" * FIVE_MIB, b"tail"]
    upload_id, etags = s3.uploaded(parts)
    response = s3.complete(upload_id, etags)

    assert response.status_int == 200
    assert ET.fromstring(response.body).tag == S3_XMLNS + "CompleteMultipartUploadResult"
    answer = xml_of(response)
    assert answer == {
        "Location": f"http://localhost/uploads/{KEY}",
        "Bucket": "uploads",
        "Key": KEY,
        "ETag": s3_etag(parts),
    }
    stored = local_s3.stored_object(s3.config, "uploads", KEY)
    assert stored.read_bytes() == b"".join(parts)
    assert (stored.size, stored.etag) == (2 * FIVE_MIB + 4, s3_etag(parts))


def test_after_complete_the_upload_is_gone_and_leaves_nothing(s3):
    upload_id, etags = s3.uploaded([b"only part"])
    s3.complete(upload_id, etags)

    s3_says(s3.list_parts(upload_id), "NoSuchUpload")
    s3_says(s3.put_part(upload_id, 2, b"late"), "NoSuchUpload")
    s3_says(s3.complete(upload_id, etags), "NoSuchUpload")
    assert listed(s3.list_uploads(), "Upload") == []
    assert upload_folders(s3.config) == []
    assert local_s3.leftover_files(s3.config) == []


def test_complete_with_a_subset_of_parts_joins_only_those(s3):
    upload_id, etags = s3.uploaded([b"1" * FIVE_MIB, b"unused", b"3"])
    s3.complete(upload_id, [etags[0], etags[2]])

    stored = local_s3.stored_object(s3.config, "uploads", KEY)
    assert stored.read_bytes() == b"1" * FIVE_MIB + b"3"
    assert stored.etag == s3_etag([b"1" * FIVE_MIB, b"3"])
    assert local_s3.leftover_files(s3.config) == []


def test_complete_accepts_etags_without_their_quotes(s3):
    upload_id, etags = s3.uploaded([b"one"])
    assert s3.complete(upload_id, [(1, etags[0][1].strip('"'))]).status_int == 200


def test_the_object_is_replaced_only_at_complete(s3):
    first_id, first = s3.uploaded([b"version one"])
    s3.complete(first_id, first)
    second_id, second = s3.uploaded([b"version two"])

    stored = local_s3.stored_object(s3.config, "uploads", KEY)
    assert stored.read_bytes() == b"version one"
    s3.complete(second_id, second)
    assert local_s3.stored_object(s3.config, "uploads", KEY).read_bytes() == b"version two"
    assert local_s3.leftover_files(s3.config) == []


MALFORMED = [
    ("empty body", b""),
    ("not XML", b"parts 1 and 2 please"),
    (
        "another root",
        b"<CompleteUpload><Part><PartNumber>1</PartNumber><ETag>e</ETag></Part></CompleteUpload>",
    ),
    ("no part", completion([])),
    (
        "part without ETag",
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part>"
        b"</CompleteMultipartUpload>",
    ),
    ("part number not a number", completion([("one", '"e"')])),
    ("another element", b"<CompleteMultipartUpload><Extra/></CompleteMultipartUpload>"),
]


@pytest.mark.parametrize("body", [row[1] for row in MALFORMED], ids=[row[0] for row in MALFORMED])
def test_complete_with_a_malformed_list_is_malformed_xml_and_changes_nothing(s3, body):
    upload_id, _ = s3.uploaded([b"kept"])
    s3_says(s3.complete(upload_id, [], body=body), "MalformedXML")

    assert local_s3.list_objects(s3.config) == []
    assert len(listed(s3.list_parts(upload_id), "Part")) == 1


@pytest.mark.parametrize("order", [[2, 1], [1, 1], [1, 3, 2]])
def test_complete_with_parts_out_of_order_is_invalid_part_order(s3, order):
    upload_id, etags = s3.uploaded([b"a" * FIVE_MIB, b"b" * FIVE_MIB, b"c"])
    response = s3.complete(upload_id, [etags[n - 1] for n in order])

    assert s3_says(response, "InvalidPartOrder")["UploadId"] == upload_id
    assert local_s3.list_objects(s3.config) == []


def test_complete_with_an_unknown_part_is_invalid_part(s3):
    upload_id, etags = s3.uploaded([b"a" * FIVE_MIB])
    response = s3.complete(upload_id, [etags[0], (2, md5_etag(b"never sent"))])

    elements = s3_says(response, "InvalidPart")
    assert (elements["PartNumber"], elements["ETag"]) == ("2", md5_etag(b"never sent"))
    assert local_s3.list_objects(s3.config) == []


def test_complete_with_a_wrong_etag_is_invalid_part_and_changes_nothing(s3):
    upload_id, _ = s3.uploaded([b"real part"])
    s3_says(s3.complete(upload_id, [(1, md5_etag(b"forged part"))]), "InvalidPart")

    assert local_s3.list_objects(s3.config) == []
    assert listed(s3.list_parts(upload_id), "Part")[0]["ETag"] == md5_etag(b"real part")


def test_a_part_under_5_mib_before_the_last_is_entity_too_small(s3):
    upload_id, etags = s3.uploaded([b"a" * (FIVE_MIB - 1), b"last"])
    response = s3.complete(upload_id, etags)
    code, message, elements = error_of(response)

    assert (response.status_int, code) == (400, "EntityTooSmall")
    assert message == "Your proposed upload is smaller than the minimum allowed size"
    assert elements == {
        "ProposedSize": str(FIVE_MIB - 1),
        "MinSizeAllowed": "5242880",
        "PartNumber": "1",
        "ETag": etags[0][1].strip('"'),
        "RequestId": elements["RequestId"],
        "HostId": elements["HostId"],
    }
    assert local_s3.list_objects(s3.config) == []
    assert local_s3.leftover_files(s3.config) == []


def test_only_the_last_part_may_be_small(s3):
    upload_id, etags = s3.uploaded([b"a" * FIVE_MIB, b"b"])
    assert s3.complete(upload_id, etags).status_int == 200


def test_a_completion_whose_body_differs_from_the_signed_hash_is_refused(s3):
    upload_id, etags = s3.uploaded([b"a" * FIVE_MIB, b"b"])
    url = f"http://localhost/uploads/{KEY}?uploadId={upload_id}"
    headers = signer.sign_request(
        s3.credentials, "POST", url, "us-east-1", payload=completion(etags), now=s3.now
    )
    response = s3.app.request(
        url.removeprefix("http://localhost"),
        method="POST",
        body=completion(etags[:1]),
        headers={**{k: v for k, v in headers.items() if k != "host"}, "Host": "localhost"},
        status="*",
    )

    s3_says(response, "XAmzContentSHA256Mismatch")
    assert local_s3.list_objects(s3.config) == []
    assert len(listed(s3.list_parts(upload_id), "Part")) == 2


def test_a_completion_list_over_its_size_limit_is_malformed_xml(s3):
    upload_id, etags = s3.uploaded([b"kept"])
    too_long = completion(etags) + b" " * local_s3.multipart.MAX_COMPLETE_XML_BYTES

    s3_says(s3.complete(upload_id, [], body=too_long), "MalformedXML")
    assert len(local_s3.multipart_uploads(s3.config, "uploads")) == 1


def test_complete_copies_no_byte_the_object_is_made_of_the_parts_files(s3):
    """Completing 1 GB must not write 1 GB again: the object's files are the parts' own."""
    upload_id, etags = s3.uploaded([b"1" * FIVE_MIB, b"2" * FIVE_MIB, b"end"])
    part_files = sorted(upload_folders(s3.config)[0].glob("*.bin"), key=lambda p: p.stat().st_size)
    part_inodes = {path.stat().st_ino for path in part_files}

    s3.complete(upload_id, etags)

    stored = local_s3.stored_object(s3.config, "uploads", KEY)
    assert {blob.stat().st_ino for blob in stored.blobs} == part_inodes
    assert stored.read_bytes() == b"1" * FIVE_MIB + b"2" * FIVE_MIB + b"end"
    assert local_s3.leftover_files(s3.config) == []


def test_get_of_a_completed_upload_answers_its_parts_in_order(s3):
    parts = [os.urandom(FIVE_MIB), os.urandom(FIVE_MIB), b"the end"]
    upload_id, etags = s3.uploaded(parts)
    s3.complete(upload_id, [etags[0], etags[1], etags[2]])

    response = s3.request("GET")

    assert response.body == b"".join(parts)
    assert response.headers["Content-Length"] == str(2 * FIVE_MIB + 7)


# --- AbortMultipartUpload -----------------------------------------------------------------------


def test_abort_answers_204_and_deletes_every_part(s3):
    upload_id, _ = s3.uploaded([b"a", b"b"])
    response = s3.abort(upload_id)

    assert (response.status_int, response.body) == (204, b"")
    s3_says(s3.list_parts(upload_id), "NoSuchUpload")
    s3_says(s3.abort(upload_id), "NoSuchUpload")
    assert upload_folders(s3.config) == []
    assert_no_object_and_nothing_left(s3.config)


def test_abort_of_an_unknown_upload_is_no_such_upload(s3):
    assert s3_says(s3.abort(UNKNOWN_ID), "NoSuchUpload")["UploadId"] == UNKNOWN_ID


def test_without_upload_id_delete_is_still_delete_object(s3):
    """DELETE ?uploadId=... aborts; a plain DELETE deletes the object, as before."""
    upload_id, etags = s3.uploaded([b"object"])
    s3.complete(upload_id, etags)
    assert s3.request("DELETE").status_int == 204
    assert local_s3.list_objects(s3.config) == []


# --- ListMultipartUploads -----------------------------------------------------------------------


def test_list_uploads_shows_each_upload_in_progress_by_key(s3):
    ids = {key: s3.create(key=key) for key in ["b/2.bin", "a/1.bin", "b/1.bin"]}
    response = s3.list_uploads()

    assert ET.fromstring(response.body).tag == S3_XMLNS + "ListMultipartUploadsResult"
    assert xml_of(response)["IsTruncated"] == "false"
    assert [(u["Key"], u["UploadId"], u["Initiated"]) for u in listed(response, "Upload")] == [
        (key, ids[key], "2026-01-01T12:00:00.000Z") for key in ["a/1.bin", "b/1.bin", "b/2.bin"]
    ]


def test_list_uploads_with_prefix_max_uploads_and_markers(s3):
    ids = sorted(s3.create(key="same.bin") for _ in range(3))
    s3.create(key="other.bin")

    prefixed = s3.list_uploads("&prefix=same")
    first = s3.list_uploads("&prefix=same&max-uploads=2")
    head = xml_of(first)
    rest = s3.list_uploads(
        f"&prefix=same&key-marker={head['NextKeyMarker']}"
        f"&upload-id-marker={head['NextUploadIdMarker']}"
    )
    after_key = s3.list_uploads("&key-marker=other.bin")

    assert [u["UploadId"] for u in listed(prefixed, "Upload")] == ids
    assert [u["UploadId"] for u in listed(first, "Upload")] == ids[:2]
    assert (head["IsTruncated"], head["NextKeyMarker"]) == ("true", "same.bin")
    assert [u["UploadId"] for u in listed(rest, "Upload")] == ids[2:]
    assert [u["Key"] for u in listed(after_key, "Upload")] == ["same.bin"] * 3


def test_list_uploads_with_encoding_type_url_encodes_keys(s3):
    s3.create(key="a b/é.bin")
    response = s3.list_uploads("&encoding-type=url")
    assert [u["Key"] for u in listed(response, "Upload")] == ["a%20b/%C3%A9.bin"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("&max-uploads=x", "InvalidArgument"),
        ("&encoding-type=base64", "InvalidArgument"),
        ("&delimiter=/", "NotImplemented"),
    ],
)
def test_list_uploads_refuses_what_it_cannot_answer(s3, query, code):
    assert error_of(s3.list_uploads(query))[0] == code


# --- CORS: the page PUTs parts from the app's origin --------------------------------------------


def test_the_preflight_of_a_part_put_is_allowed_and_etag_exposed(s3):
    response = s3.app.options(
        f"/uploads/{KEY}?partNumber=1&uploadId={UNKNOWN_ID}",
        headers={
            "Origin": S3_TEST_ORIGIN,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.headers["Access-Control-Allow-Origin"] == S3_TEST_ORIGIN
    assert "PUT" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"] == "content-type"
    assert "ETag" in response.headers["Access-Control-Expose-Headers"]


def test_a_part_put_from_the_apps_origin_exposes_its_etag(s3):
    upload_id = s3.create()
    response = s3.put_part(upload_id, 1, b"part", headers={"Origin": S3_TEST_ORIGIN})

    assert response.headers["Access-Control-Allow-Origin"] == S3_TEST_ORIGIN
    assert "ETag" in response.headers["Access-Control-Expose-Headers"]


# --- on disk: paths from hashes, private files --------------------------------------------------


def test_upload_records_name_no_path_from_the_key_or_id(s3):
    """The upload's folder is the hash of its id, whatever the key."""
    upload_id = s3.create(key="../../outside.bin")
    s3.put_part(upload_id, 1, b"inside", key="../../outside.bin")

    (folder,) = upload_folders(s3.config)
    assert folder.name == hashlib.sha256(upload_id.encode()).hexdigest()
    record = json.loads((folder / "upload.json").read_text())
    assert (record["key"], record["upload_id"]) == ("../../outside.bin", upload_id)
    assert not (s3.config.data_dir.parent / "outside.bin").exists()


def test_an_uploads_folder_and_records_are_private_whatever_the_umask(s3):
    """Like the rest of the data folder: 0700 folders, 0600 records, even under umask 0."""
    previous = os.umask(0)
    try:
        s3.uploaded([b"private"])
    finally:
        os.umask(previous)

    root = s3.config.data_dir / "multipart"
    (folder,) = upload_folders(s3.config)
    records = [path for path in folder.iterdir() if path.suffix == ".json"]
    assert [path.stat().st_mode & 0o777 for path in (root, folder)] == [0o700, 0o700]
    assert sorted(path.name for path in records) == ["part-00001.json", "upload.json"]
    assert {path.stat().st_mode & 0o777 for path in records} == {0o600}


# --- over real HTTP: botocore, presigned lengths, restarts, memory ------------------------------


def test_botocore_runs_a_whole_multipart_upload(running_s3):
    client = boto3_client(running_s3)
    parts = [b"x" * FIVE_MIB, b"the end"]
    created = client.create_multipart_upload(Bucket="uploads", Key=KEY, ContentType="video/mp4")
    upload_id = created["UploadId"]
    etags = [
        client.upload_part(Bucket="uploads", Key=KEY, UploadId=upload_id, PartNumber=n, Body=data)[
            "ETag"
        ]
        for n, data in enumerate(parts, start=1)
    ]
    listed_parts = client.list_parts(Bucket="uploads", Key=KEY, UploadId=upload_id)["Parts"]
    in_progress = client.list_multipart_uploads(Bucket="uploads")["Uploads"]
    done = client.complete_multipart_upload(
        Bucket="uploads",
        Key=KEY,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )

    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed_parts] == [
        (1, FIVE_MIB, md5_etag(parts[0])),
        (2, 7, md5_etag(parts[1])),
    ]
    assert [(u["Key"], u["UploadId"]) for u in in_progress] == [(KEY, upload_id)]
    assert (done["Bucket"], done["Key"], done["ETag"]) == ("uploads", KEY, s3_etag(parts))
    head = client.head_object(Bucket="uploads", Key=KEY)
    assert (head["ContentLength"], head["ETag"], head["ContentType"]) == (
        FIVE_MIB + 7,
        s3_etag(parts),
        "video/mp4",
    )
    assert "Uploads" not in client.list_multipart_uploads(Bucket="uploads")
    assert local_s3.leftover_files(running_s3.config) == []


def test_botocore_abort_leaves_no_upload_behind(running_s3):
    client = boto3_client(running_s3)
    upload_id = client.create_multipart_upload(Bucket="uploads", Key=KEY)["UploadId"]
    client.upload_part(Bucket="uploads", Key=KEY, UploadId=upload_id, PartNumber=1, Body=b"p")
    client.abort_multipart_upload(Bucket="uploads", Key=KEY, UploadId=upload_id)

    assert "Uploads" not in client.list_multipart_uploads(Bucket="uploads")
    with pytest.raises(client.exceptions.NoSuchUpload):
        client.list_parts(Bucket="uploads", Key=KEY, UploadId=upload_id)
    assert local_s3.leftover_files(running_s3.config) == []
    assert upload_folders(running_s3.config) == []


def test_botocore_sees_s3s_errors_for_bad_completions(running_s3):
    client = boto3_client(running_s3)
    upload_id = client.create_multipart_upload(Bucket="uploads", Key=KEY)["UploadId"]
    small = client.upload_part(
        Bucket="uploads", Key=KEY, UploadId=upload_id, PartNumber=1, Body=b"small"
    )["ETag"]
    client.upload_part(Bucket="uploads", Key=KEY, UploadId=upload_id, PartNumber=2, Body=b"z")

    def complete(parts):
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            client.complete_multipart_upload(
                Bucket="uploads", Key=KEY, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        return refused.value.response["Error"]["Code"]

    assert complete([{"PartNumber": 1, "ETag": small}, {"PartNumber": 2, "ETag": small}]) == (
        "InvalidPart"
    )
    assert complete([{"PartNumber": 2, "ETag": small}, {"PartNumber": 1, "ETag": small}]) == (
        "InvalidPartOrder"
    )
    assert complete(
        [{"PartNumber": 1, "ETag": small}, {"PartNumber": 2, "ETag": md5_etag(b"z")}]
    ) == ("EntityTooSmall")


def put_over_http(url: str, body: bytes, headers=None) -> tuple[int, Any, bytes]:
    target = urlsplit(url)
    connection = http.client.HTTPConnection(target.netloc, timeout=30)
    try:
        connection.request("PUT", f"{target.path}?{target.query}", body, headers or {})
        reply = connection.getresponse()
        return reply.status, reply.headers, reply.read()
    finally:
        connection.close()


def test_a_presigned_part_url_takes_exactly_its_signed_length(running_s3):
    client = boto3_client(running_s3)
    upload_id = client.create_multipart_upload(Bucket="uploads", Key=KEY)["UploadId"]
    params = {"Bucket": "uploads", "Key": KEY, "UploadId": upload_id, "PartNumber": 1}
    url = client.generate_presigned_url(
        "upload_part", Params={**params, "ContentLength": 10}, ExpiresIn=60
    )

    longer = put_over_http(url, b"x" * 11)
    shorter = put_over_http(url, b"x" * 9)
    exact = put_over_http(url, b"x" * 10)

    assert longer[0] == shorter[0] == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in longer[2]
    assert b"<Code>SignatureDoesNotMatch</Code>" in shorter[2]
    assert (exact[0], exact[1]["ETag"]) == (200, md5_etag(b"x" * 10))
    parts = client.list_parts(**{k: v for k, v in params.items() if k != "PartNumber"})["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 10)]
    assert local_s3.leftover_files(running_s3.config) == []


def test_a_part_without_content_length_is_missing_content_length(running_s3):
    """S3 takes a part's size from Content-Length only."""
    client = boto3_client(running_s3)
    upload_id = client.create_multipart_upload(Bucket="uploads", Key=KEY)["UploadId"]
    url = client.generate_presigned_url(
        "upload_part",
        Params={"Bucket": "uploads", "Key": KEY, "UploadId": upload_id, "PartNumber": 1},
        ExpiresIn=60,
    )
    target = urlsplit(url)
    with connect(running_s3.url) as connection:
        connection.sendall(
            f"PUT {target.path}?{target.query} HTTP/1.1\r\nHost: {target.netloc}\r\n\r\n".encode()
        )
        reply = http.client.HTTPResponse(connection)
        reply.begin()
        answer = reply.read()

    assert reply.status == 411 and b"<Code>MissingContentLength</Code>" in answer
    assert client.list_parts(Bucket="uploads", Key=KEY, UploadId=upload_id).get("Parts") is None


def test_parts_survive_a_restart_and_only_leftovers_are_removed(start_s3):
    first = start_s3()
    client = boto3_client(first)
    upload_id = client.create_multipart_upload(Bucket="uploads", Key=KEY)["UploadId"]
    etag = client.upload_part(
        Bucket="uploads", Key=KEY, UploadId=upload_id, PartNumber=1, Body=b"kept"
    )["ETag"]
    first.stop()
    data = first.config.data_dir
    interrupted = data / ".tmp" / "interrupted-part.part"
    interrupted.write_bytes(b"half a part")
    (folder,) = upload_folders(first.config)
    orphan = folder / "0123456789abcdef0123456789abcdef.bin"
    orphan.write_bytes(b"never recorded")
    assert sorted(local_s3.leftover_files(first.config)) == sorted([interrupted, orphan])

    second = start_s3()
    parts = boto3_client(second).list_parts(Bucket="uploads", Key=KEY, UploadId=upload_id)

    assert [(p["PartNumber"], p["ETag"]) for p in parts["Parts"]] == [(1, etag)]
    assert not interrupted.exists() and not orphan.exists()
    assert local_s3.leftover_files(second.config) == []


def test_a_multipart_upload_streams_with_flat_memory(running_s3):
    """Three parts of 5 MiB and more: each streams to disk and the object is joined a chunk at a
    time, so the process never holds a part, let alone the 15 MiB object."""
    client = boto3_client(running_s3)
    upload_id = client.create_multipart_upload(Bucket="uploads", Key=KEY)["UploadId"]
    parts = [bytes([n]) * (FIVE_MIB + n) for n in range(1, 4)]
    urls = [
        client.generate_presigned_url(
            "upload_part",
            Params={"Bucket": "uploads", "Key": KEY, "UploadId": upload_id, "PartNumber": n},
            ExpiresIn=60,
        )
        for n in range(1, 4)
    ]
    completed = {"Parts": [{"PartNumber": n, "ETag": md5_etag(p)} for n, p in enumerate(parts, 1)]}
    tracemalloc.start()
    try:
        statuses = [put_over_http(url, part)[0] for url, part in zip(urls, parts, strict=True)]
        done = client.complete_multipart_upload(
            Bucket="uploads", Key=KEY, UploadId=upload_id, MultipartUpload=completed
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert statuses == [200, 200, 200]
    assert done["ETag"] == s3_etag(parts)
    # storage.py's MD5 queue (16 chunks of 256 KB, full when the hashing thread lags on a busy
    # machine) and a few chunks in flight: about 5 MiB at worst. A part held whole would add
    # 5 MiB to that, the object 15 MiB.
    assert peak < 7 * 1024 * 1024
    stored = local_s3.stored_object(running_s3.config, "uploads", KEY)
    assert stored.size == sum(map(len, parts))
    assert local_s3.leftover_files(running_s3.config) == []


def test_botocore_paginators_walk_parts_and_uploads_a_page_at_a_time(running_s3):
    client = boto3_client(running_s3)
    ids = sorted(
        client.create_multipart_upload(Bucket="uploads", Key=f"k/{n}")["UploadId"]
        for n in (1, 1, 2)
    )
    for number in (1, 2, 3):
        client.upload_part(
            Bucket="uploads", Key="k/2", UploadId=ids[2], PartNumber=number, Body=b"p"
        )
    uploads = client.get_paginator("list_multipart_uploads").paginate(
        Bucket="uploads", PaginationConfig={"PageSize": 1}
    )
    parts = client.get_paginator("list_parts").paginate(
        Bucket="uploads", Key="k/2", UploadId=ids[2], PaginationConfig={"PageSize": 1}
    )

    pages = list(uploads)
    assert len(pages) == 3
    assert [u["UploadId"] for page in pages for u in page["Uploads"]] == ids
    assert [p["PartNumber"] for page in parts for p in page["Parts"]] == [1, 2, 3]


def test_parts_sent_in_parallel_are_all_kept_and_joined_in_order(running_s3):
    client = boto3_client(running_s3)
    upload_id = client.create_multipart_upload(Bucket="uploads", Key=KEY)["UploadId"]
    parts = [bytes([n]) * (FIVE_MIB if n < 6 else 10) for n in range(1, 7)]
    urls = [
        client.generate_presigned_url(
            "upload_part",
            Params={"Bucket": "uploads", "Key": KEY, "UploadId": upload_id, "PartNumber": n},
            ExpiresIn=60,
        )
        for n in range(1, 7)
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = list(pool.map(put_over_http, urls, parts))
    completed = [{"PartNumber": n, "ETag": r[1]["ETag"]} for n, r in enumerate(replies, 1)]
    done = client.complete_multipart_upload(
        Bucket="uploads", Key=KEY, UploadId=upload_id, MultipartUpload={"Parts": completed}
    )

    assert [status for status, _, _ in replies] == [200] * 6
    assert done["ETag"] == s3_etag(parts)
    stored = local_s3.stored_object(running_s3.config, "uploads", KEY)
    assert stored.read_bytes() == b"".join(parts)
    assert local_s3.leftover_files(running_s3.config) == []


def test_a_part_arriving_after_its_upload_was_aborted_is_no_such_upload(running_s3):
    """The part streams while the upload is aborted: it is refused when it ends, and its
    temporary file goes with it."""
    client = boto3_client(running_s3)
    upload_id = client.create_multipart_upload(Bucket="uploads", Key=KEY)["UploadId"]
    url = urlsplit(
        client.generate_presigned_url(
            "upload_part",
            Params={"Bucket": "uploads", "Key": KEY, "UploadId": upload_id, "PartNumber": 1},
            ExpiresIn=60,
        )
    )
    body = b"late" * 250_000
    with connect(running_s3.url) as connection:
        head = f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        connection.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[:500_000])
        wait_for(lambda: local_s3.leftover_files(running_s3.config), "the part began")
        client.abort_multipart_upload(Bucket="uploads", Key=KEY, UploadId=upload_id)
        connection.sendall(body[500_000:])
        reply = http.client.HTTPResponse(connection)
        reply.begin()
        answer = reply.read()

    assert reply.status == 404 and b"<Code>NoSuchUpload</Code>" in answer
    assert local_s3.leftover_files(running_s3.config) == []
    assert upload_folders(running_s3.config) == []


def test_a_part_declared_over_5_gib_is_refused_over_http_before_its_body(running_s3):
    client = boto3_client(running_s3)
    upload_id = client.create_multipart_upload(Bucket="uploads", Key=KEY)["UploadId"]
    url = urlsplit(
        client.generate_presigned_url(
            "upload_part",
            Params={"Bucket": "uploads", "Key": KEY, "UploadId": upload_id, "PartNumber": 1},
            ExpiresIn=60,
        )
    )
    with connect(running_s3.url) as connection:
        connection.sendall(
            f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Length: {5 * 1024**3 + 1}\r\n\r\n".encode()
        )
        reply = http.client.HTTPResponse(connection)
        reply.begin()
        answer = reply.read()

    assert reply.status == 400 and b"<Code>EntityTooLarge</Code>" in answer
    assert b"<MaxSizeAllowed>5368709120</MaxSizeAllowed>" in answer
    assert local_s3.leftover_files(running_s3.config) == []


def test_the_browsers_preflight_for_a_part_is_answered_over_http(running_s3):
    target = urlsplit(running_s3.url)
    connection = http.client.HTTPConnection(target.netloc, timeout=10)
    try:
        connection.request(
            "OPTIONS",
            f"/uploads/{KEY}?partNumber=1&uploadId={UNKNOWN_ID}",
            headers={
                "Origin": S3_TEST_ORIGIN,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        reply = connection.getresponse()
        reply.read()
    finally:
        connection.close()

    assert reply.status == 200
    assert reply.getheader("Access-Control-Allow-Origin") == S3_TEST_ORIGIN
    assert "ETag" in reply.getheader("Access-Control-Expose-Headers")
