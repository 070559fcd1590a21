"""public/s3-errors.js in Chromium: S3's XML errors as sentences, and the first difference between
the text S3 signed and ours. The module is loaded into a blank page and called, as the upload
page calls it."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

import local_s3

pytestmark = pytest.mark.browser

MODULE = Path(__file__).resolve().parent.parent / "public" / "s3-errors.js"

# What the upload page can meet (S3's error-code page and the local S3's table): each needs a
# sentence of its own, not S3's message.
PAGE_ERRORS = [
    "AccessControlListNotSupported",
    "AccessDenied",
    "AuthorizationHeaderMalformed",
    "AuthorizationQueryParametersError",
    "BadDigest",
    "EntityTooLarge",
    "EntityTooSmall",
    "ExpiredToken",
    "IncompleteBody",
    "InternalError",
    "InvalidAccessKeyId",
    "InvalidArgument",
    "InvalidPolicyDocument",
    "InvalidToken",
    "KeyTooLongError",
    "MalformedPOSTRequest",
    "MetadataTooLarge",
    "MethodNotAllowed",
    "MissingContentLength",
    "NoSuchBucket",
    "NotImplemented",
    "PermanentRedirect",
    "RequestTimeTooSkewed",
    "RequestTimeout",
    "ServiceUnavailable",
    "SignatureDoesNotMatch",
    "SlowDown",
    "TemporaryRedirect",
    "XAmzContentSHA256Mismatch",
]


# The local S3's codes that an upload from the page never meets: bucket configuration (?cors),
# reads, and preflights (a refused preflight never reaches the page's script).
NOT_MET_BY_THE_PAGE = {
    "BadRequest",
    "MalformedXML",
    "NoSuchCORSConfiguration",
    "NoSuchKey",
    # Completing a multipart upload is the server's request, not the page's.
    "InvalidPart",
    "InvalidPartOrder",
    # The setup doctor's questions about the bucket.
    "NoSuchLifecycleConfiguration",
    "OwnershipControlsNotFoundError",
    # The page never sends a body with a GET, nor a header-signed payload hash.
    "UnexpectedContent",
    "XAmzContentSHA256Mismatch",
}


@pytest.fixture(scope="module")
def errors_page(browser: Browser) -> Iterator[Page]:
    """A blank page with s3-errors.js loaded; nothing else, so the module stands alone."""
    context = browser.new_context()
    page = context.new_page()
    page.add_script_tag(content=MODULE.read_text())
    yield page
    context.close()


def error_xml(code: str, message: str = "", **elements: str) -> str:
    body = "".join(f"<{name}>{value}</{name}>" for name, value in elements.items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{body}"
        "<RequestId>4442587FB7D0A2F9</RequestId></Error>"
    )


def explain(page: Page, xml: str, context: dict[str, Any] | None = None, region: str = "") -> str:
    return page.evaluate(
        "([xml, context, region]) => S3Errors.explain(S3Errors.fromXml(xml, 403, region), context)",
        [xml, context or {}, region],
    )


def test_every_error_the_page_can_meet_has_a_sentence(errors_page: Page) -> None:
    table = errors_page.evaluate("Object.keys(S3Errors.EXPLANATIONS)")
    assert sorted(set(PAGE_ERRORS) - set(table)) == []
    assert sorted(set(local_s3.ERRORS) - set(table) - NOT_MET_BY_THE_PAGE) == []
    for code in sorted(set(PAGE_ERRORS) | set(local_s3.ERRORS) - NOT_MET_BY_THE_PAGE):
        message = local_s3.ERRORS[code].message if code in local_s3.ERRORS else "S3 says no."
        sentence = explain(errors_page, error_xml(code, message), {"method": "POST"})
        assert sentence != message and sentence.endswith("."), code


@pytest.mark.parametrize(
    ("xml", "context", "region", "expected"),
    [
        (
            error_xml("AccessDenied", "Invalid according to Policy: Policy expired."),
            {},
            "",
            "The signed form expired before S3 received the file",
        ),
        (
            error_xml("AccessDenied", "Request has expired", Expires="2026-01-01T00:05:00Z"),
            {"method": "PUT"},
            "",
            "The presigned URL expired before S3 received the file",
        ),
        (
            error_xml(
                "AccessDenied",
                "There were headers present in the request which were not signed",
                HeadersNotSigned="x-amz-tagging",
            ),
            {"method": "PUT"},
            "",
            "headers the signature does not cover (x-amz-tagging)",
        ),
        (
            error_xml("AccessDenied", "Access Denied"),
            {"method": "PUT"},
            "",
            "S3 refused the PUT: the app's credentials need s3:PutObject",
        ),
        (
            error_xml(
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
                RequestTime="20260101T000000Z",
                ServerTime="2026-01-01T00:20:00Z",
                MaxAllowedSkewMilliseconds="900000",
            ),
            {},
            "",
            "This server's clock is 1200 s behind S3's (S3 allows 15 minutes)",
        ),
        (
            error_xml(
                "RequestTimeTooSkewed",
                RequestTime="Thu, 01 Jan 2026 00:17:30 GMT",
                ServerTime="2026-01-01T00:00:00Z",
            ),
            {},
            "",
            "This server's clock is 1050 s ahead of S3's",
        ),
        (
            error_xml("AccessControlListNotSupported", "The bucket does not allow ACLs"),
            {},
            "",
            "Unset S3_ACL (only bucket-owner-full-control is still accepted).",
        ),
        (
            error_xml(
                "AuthorizationHeaderMalformed",
                "The authorization header is malformed; the region 'us-east-1' is wrong; "
                "expecting 'eu-west-1'",
                Region="eu-west-1",
            ),
            {},
            "",
            "The bucket is in eu-west-1, not in the region the app signs for: "
            "set AWS_REGION=eu-west-1.",
        ),
        (
            error_xml("PermanentRedirect", "The bucket you are attempting to access must be..."),
            {},
            "ap-southeast-2",
            "set AWS_REGION=ap-southeast-2.",
        ),
        (
            error_xml(
                "PermanentRedirect",
                "The bucket you are attempting to access must be addressed using the specified "
                "endpoint. Please send all future requests to this endpoint.",
                Endpoint="photos.s3.eu-west-3.amazonaws.com",
                Bucket="photos",
            ),
            {},
            "",
            "The bucket is in eu-west-3, not in the region the app signs for",
        ),
        (
            error_xml(
                "InvalidArgument",
                "Invalid according to Policy: the region 'us-east-1' is wrong; expecting "
                "'eu-central-1'",
                ArgumentName="x-amz-credential",
                Region="eu-central-1",
            ),
            {"method": "POST"},
            "",
            "set AWS_REGION=eu-central-1.",
        ),
        (
            error_xml("InvalidAccessKeyId", AWSAccessKeyId="AKIDUNKNOWN"),
            {},
            "",
            "S3 does not know the access key AKIDUNKNOWN: check AWS_ACCESS_KEY_ID",
        ),
        (
            error_xml("NotImplemented", "POST Object is not implemented"),
            {"method": "POST"},
            "",
            "set UPLOAD_METHOD=put.",
        ),
        (
            error_xml("EntityTooLarge", ProposedSize="2000", MaxSizeAllowed="1024"),
            {"maxHuman": "10 MB"},
            "",
            "This file is larger than the 10 MB limit.",
        ),
        (
            error_xml("SignatureDoesNotMatch", StringToSign="eyJhIjoxfQ=="),
            {"method": "POST", "ours": {"stringToSign": "eyJhIjoxfQ=="}},
            "",
            "S3 signed the same string to sign as the app, so the key differs: "
            "AWS_SECRET_ACCESS_KEY is not the secret of AWS_ACCESS_KEY_ID",
        ),
        (
            error_xml(
                "SignatureDoesNotMatch",
                StringToSign="AWS4-HMAC-SHA256\n...",
                CanonicalRequest="PUT\n/uploads/a.png\n\ncontent-length:10\n",
            ),
            {
                "method": "PUT",
                "ours": {
                    "stringToSign": "AWS4-HMAC-SHA256\n,,,",
                    "canonicalRequest": "PUT\n/uploads/a.png\n\ncontent-length:12\n",
                },
            },
            "",
            "S3 signed a different canonical request than the app did",
        ),
        (error_xml("SomethingNew", "A message S3 wrote."), {}, "", "A message S3 wrote."),
        ("<html>Bad gateway</html>", {}, "", "S3 refused the upload."),
    ],
)
def test_an_s3_error_becomes_its_cause_and_fix(
    errors_page: Page, xml: str, context: dict, region: str, expected: str
) -> None:
    assert expected in explain(errors_page, xml, context, region)


def test_an_answer_that_is_not_s3s_xml_keeps_the_http_status_as_its_code(
    errors_page: Page,
) -> None:
    error = errors_page.evaluate("S3Errors.fromXml('<html>Bad gateway</html>', 502, '')")
    assert (error["code"], error["details"]) == ("HTTP 502", {})


@pytest.mark.parametrize(
    ("ours", "theirs", "index"),
    [
        ("abc", "abc", -1),
        ("abc", "abd", 2),
        ("ab", "abc", 2),
        ("abc", "ab", 2),
        ("", "x", 0),
        ("PUT\ncontent-type:image/png\n", "PUT\ncontent-type:image/gif\n", 23),
    ],
)
def test_first_difference_is_the_index_where_the_texts_part(
    errors_page: Page, ours: str, theirs: str, index: int
) -> None:
    found = errors_page.evaluate("([a, b]) => S3Errors.firstDifference(a, b)", [ours, theirs])
    assert found == index


@pytest.mark.parametrize(
    ("ours", "theirs", "marked"),
    [
        (
            "PUT\ncontent-type:image/png\nhost:a\n",
            "PUT\ncontent-type:image/gif\nhost:a\n",
            ["png", "gif"],
        ),
        ("eyJhIjoxfQ==", "eyJhIjoyfQ==", ["x", "y"]),
        ("abcabc", "abc", ["abc", ""]),
        ("aXb", "aXYXb", ["", "YX"]),
        ("same", "same", None),
    ],
)
def test_the_difference_is_what_lies_between_a_common_start_and_a_common_end(
    errors_page: Page, ours: str, theirs: str, marked: list[str] | None
) -> None:
    found = errors_page.evaluate(
        """([a, b]) => {
            const d = S3Errors.difference(a, b);
            const cut = S3Errors.cut;
            return d && [cut(a, d.start, d.oursEnd), cut(b, d.start, d.theirsEnd)];
        }""",
        [ours, theirs],
    )
    if marked is None:
        assert found is None
        return
    (before, mine, after), (_, s3s, s3_after) = found
    assert [mine, s3s] == marked
    assert before + mine + after == ours and before + s3s + s3_after == theirs


@pytest.mark.parametrize(
    ("request_time", "server_time", "skew"),
    [
        ("20260101T001000Z", "2026-01-01T00:00:00Z", 600),
        ("20260101T000000Z", "2026-01-01T00:00:30.000Z", -30),
        ("not a time", "2026-01-01T00:00:00Z", None),
    ],
)
def test_skew_is_the_request_time_minus_s3s_time(
    errors_page: Page, request_time: str, server_time: str, skew: int | None
) -> None:
    xml = error_xml("RequestTimeTooSkewed", RequestTime=request_time, ServerTime=server_time)
    found = errors_page.evaluate("(x) => S3Errors.skewSeconds(S3Errors.fromXml(x, 403))", xml)
    assert found == skew
