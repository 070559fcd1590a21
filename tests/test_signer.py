"""signer.py against references nobody here wrote: AWS's published examples and botocore."""

import base64
import functools
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import botocore.session
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

import signer
from signer import Credentials, SignerError

ROOT = Path(__file__).resolve().parent.parent

# AWS's example credentials, used throughout the S3 SigV4 documentation.
AWS_KEYS = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
MAY_24_2013 = datetime(2013, 5, 24, tzinfo=UTC)
EXAMPLE_HOST = "https://examplebucket.s3.amazonaws.com"


@pytest.fixture
def now() -> datetime:
    return datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC)


@pytest.fixture
def credentials() -> Credentials:
    return Credentials("AKIDLOCAL", "local-secret-key")


def decoded_policy(form: dict) -> dict:
    return json.loads(base64.b64decode(form["fields"]["policy"]))


# --- AWS's published examples --------------------------------------------------------------------


def test_reproduces_the_browser_post_example_signature():
    """S3 API Reference, "Example: Browser-Based Upload using HTTP POST (AWS Signature V4)"."""
    key = signer.signing_key(AWS_KEYS.secret_key, "20151229", "us-east-1")
    assert signer.signature(key, signer.AWS_EXAMPLE_POLICY) == signer.AWS_EXAMPLE_SIGNATURE
    assert signer.AWS_EXAMPLE_SIGNATURE == (
        "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"
    )


def test_derives_each_intermediate_key_of_the_documented_example():
    """IAM User Guide, "Examples of how to derive a signing key for Signature Version 4"."""
    keys = signer.derived_keys(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam"
    )
    assert keys.date_key.hex() == "969fbb94feb542b71ede6f87fe4d5fa29c789342b0f407474670f0c2489e0a0d"
    assert keys.date_region_key.hex() == (
        "69daa0209cd9c5ff5c8ced464a696fd4252e981430b10e3d3fd8e2f197d7a70c"
    )
    assert keys.date_region_service_key.hex() == (
        "f72cfd46f26bc4643f06a11eabb6c0ba18780c19a8da0c31ace671265e3c87fa"
    )
    assert keys.signing_key.hex() == (
        "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
    )


def test_reproduces_the_presigned_url_example_byte_for_byte():
    """S3 API Reference, "Authenticating Requests: Using Query Parameters (AWS Signature V4)"."""
    url = signer.presign_url(
        AWS_KEYS, "GET", f"{EXAMPLE_HOST}/test.txt", "us-east-1", expires_in=86400, now=MAY_24_2013
    )
    assert url == (
        f"{EXAMPLE_HOST}/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )


def test_presigned_url_example_canonical_request_hashes_as_documented():
    query = signer.canonical_query_string(
        [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"),
            ("X-Amz-Date", "20130524T000000Z"),
            ("X-Amz-Expires", "86400"),
            ("X-Amz-SignedHeaders", "host"),
        ]
    )
    request = signer.canonical_request(
        "GET",
        "/test.txt",
        query,
        {"host": "examplebucket.s3.amazonaws.com"},
        ["host"],
        signer.UNSIGNED_PAYLOAD,
    )
    to_sign = signer.string_to_sign(
        "20130524T000000Z", "20130524/us-east-1/s3/aws4_request", request
    )
    assert to_sign.splitlines()[-1] == (
        "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04"
    )


# S3 API Reference, "Signature Calculations for the Authorization Header: Transferring Payload in
# a Single Chunk (AWS Signature Version 4)": its four examples, all on 2013-05-24.
HEADER_EXAMPLES = [
    (
        "GET",
        "/test.txt",
        {"Range": "bytes=0-9"},
        b"",
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    ),
    (
        "PUT",
        "/test$file.text",
        {"Date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-storage-class": "REDUCED_REDUNDANCY"},
        b"Welcome to Amazon S3.",
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
    ),
    (
        "GET",
        "/?lifecycle",
        {},
        b"",
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
    ),
    (
        "GET",
        "/?max-keys=2&prefix=J",
        {},
        b"",
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
    ),
]


@pytest.mark.parametrize(("method", "path", "headers", "payload", "expected"), HEADER_EXAMPLES)
def test_reproduces_the_authorization_header_examples(method, path, headers, payload, expected):
    signed = signer.sign_request(
        AWS_KEYS,
        method,
        EXAMPLE_HOST + path,
        "us-east-1",
        headers=headers,
        payload=payload,
        now=MAY_24_2013,
    )
    assert signed["authorization"].endswith(f"Signature={expected}")
    assert signed["x-amz-date"] == "20130524T000000Z"


def test_put_example_signs_the_payload_hash_from_the_documentation():
    signed = signer.sign_request(
        AWS_KEYS,
        "PUT",
        f"{EXAMPLE_HOST}/test$file.text",
        "us-east-1",
        payload=b"Welcome to Amazon S3.",
        now=MAY_24_2013,
    )
    assert signed["x-amz-content-sha256"] == (
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    )


def test_explain_aws_example_says_it_matches_aws():
    output = run_signer("explain", "--aws-example")
    assert "Matches AWS's published signature\n    yes\n" in output
    assert signer.AWS_EXAMPLE_SIGNATURE in output


# --- the browser POST form -----------------------------------------------------------------------


def test_presigned_post_has_boto3s_shape_and_field_order(credentials, now):
    form = signer.presigned_post(
        credentials,
        bucket="uploads",
        key="a/b.png",
        region="eu-west-1",
        max_bytes=1000,
        content_type="image/png",
        now=now,
    )
    assert form["url"] == "https://uploads.s3.eu-west-1.amazonaws.com/"
    assert list(form["fields"]) == [
        "key",
        "Content-Type",
        "success_action_status",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "policy",
        "x-amz-signature",
    ]
    assert form["fields"]["x-amz-credential"] == "AKIDLOCAL/20260301/eu-west-1/s3/aws4_request"
    assert form["fields"]["x-amz-date"] == "20260301T123015Z"


def test_policy_pins_exact_key_size_range_type_and_expiry(credentials, now):
    form = signer.presigned_post(
        credentials,
        bucket="uploads",
        key="a/b.png",
        region="us-east-1",
        min_bytes=10,
        max_bytes=1000,
        content_type="image/png",
        expires_in=120,
        now=now,
    )
    policy = decoded_policy(form)
    assert policy["expiration"] == "2026-03-01T12:32:15.000Z"
    assert {"bucket": "uploads"} in policy["conditions"]
    assert {"key": "a/b.png"} in policy["conditions"]
    assert ["content-length-range", 10, 1000] in policy["conditions"]
    assert {"Content-Type": "image/png"} in policy["conditions"]
    assert not any(isinstance(c, list) and c[0] == "starts-with" for c in policy["conditions"])


def test_every_returned_field_is_covered_by_an_exact_condition(credentials, now):
    form = signer.presigned_post(
        Credentials("AKID", "secret", session_token="TOKEN/+="),
        bucket="uploads",
        key="k",
        region="us-east-1",
        max_bytes=5,
        acl="private",
        metadata={"Filename": "cat.png", "x-amz-meta-owner": "7"},
        now=now,
    )
    covered = {next(iter(c)) for c in decoded_policy(form)["conditions"] if isinstance(c, dict)}
    signed_fields = set(form["fields"]) - {"policy", "x-amz-signature"}
    assert signed_fields <= covered
    assert form["fields"]["x-amz-security-token"] == "TOKEN/+="
    assert form["fields"]["x-amz-meta-filename"] == "cat.png"
    assert form["fields"]["x-amz-meta-owner"] == "7"
    assert form["fields"]["acl"] == "private"


def test_type_prefix_becomes_starts_with_and_leaves_the_field_to_the_browser(credentials, now):
    form = signer.presigned_post(
        credentials,
        bucket="uploads",
        key="k",
        region="us-east-1",
        max_bytes=5,
        content_type="image/",
        now=now,
    )
    assert ["starts-with", "$Content-Type", "image/"] in decoded_policy(form)["conditions"]
    assert "Content-Type" not in form["fields"]


def test_a_filename_variable_is_pinned_up_to_the_variable_with_starts_with(credentials, now):
    """S3's own browser-POST example signs key "user/user1/${filename}" this way."""
    form = signer.presigned_post(
        credentials,
        bucket="uploads",
        key="user/user1/${filename}",
        region="us-east-1",
        max_bytes=5,
        metadata={"filename": "${filename}"},
        now=now,
    )
    conditions = decoded_policy(form)["conditions"]
    assert ["starts-with", "$key", "user/user1/"] in conditions
    assert ["starts-with", "$x-amz-meta-filename", ""] in conditions
    assert form["fields"]["x-amz-meta-filename"] == "${filename}"
    assert {"key": "user/user1/${filename}"} not in conditions


def test_acl_is_absent_unless_asked_for(credentials, now):
    form = signer.presigned_post(
        credentials, bucket="uploads", key="k", region="us-east-1", max_bytes=5, now=now
    )
    assert "acl" not in form["fields"]
    assert not any("acl" in c for c in decoded_policy(form)["conditions"] if isinstance(c, dict))


def test_redirect_replaces_success_status(credentials, now):
    form = signer.presigned_post(
        credentials,
        bucket="uploads",
        key="k",
        region="us-east-1",
        max_bytes=5,
        success_action_redirect="http://127.0.0.1:8080/uploads/done?token=abc",
        now=now,
    )
    assert form["fields"]["success_action_redirect"].endswith("/uploads/done?token=abc")
    assert "success_action_status" not in form["fields"]


def test_does_not_change_the_callers_metadata(credentials, now):
    metadata = {"Filename": "cat.png"}
    signer.presigned_post(
        credentials,
        bucket="b12",
        key="k",
        region="us-east-1",
        max_bytes=5,
        metadata=metadata,
        now=now,
    )
    assert metadata == {"Filename": "cat.png"}


def test_same_inputs_and_clock_give_the_same_form(credentials, now):
    make = lambda: signer.presigned_post(  # noqa: E731
        credentials, bucket="b12", key="k", region="us-east-1", max_bytes=5, now=now
    )
    assert make() == make()


def test_signing_key_is_derived_once_per_day(credentials, now):
    signer.signing_key.cache_clear()
    for _ in range(3):
        signer.presigned_post(
            credentials, bucket="b12", key="k", region="us-east-1", max_bytes=5, now=now
        )
    assert signer.signing_key.cache_info().misses == 1
    assert signer.signing_key.cache_info().hits == 2


@pytest.mark.parametrize(
    ("bucket", "region", "endpoint", "expected"),
    [
        ("photos", "us-east-1", None, "https://photos.s3.amazonaws.com/"),
        ("photos", "eu-central-1", None, "https://photos.s3.eu-central-1.amazonaws.com/"),
        ("photos", "cn-north-1", None, "https://photos.s3.cn-north-1.amazonaws.com.cn/"),
        ("my.photos", "eu-west-1", None, "https://s3.eu-west-1.amazonaws.com/my.photos/"),
        ("photos", "us-east-1", "http://127.0.0.1:9000", "http://127.0.0.1:9000/photos/"),
        ("photos", "auto", "https://acct.r2.cloudflarestorage.com/", None),
    ],
)
def test_bucket_url_is_virtual_hosted_on_aws_and_path_style_elsewhere(
    bucket, region, endpoint, expected
):
    expected = expected or f"{endpoint}{bucket}/"
    assert signer.bucket_url(bucket, region, endpoint) == expected


def test_object_url_encodes_the_key_once_and_keeps_slashes():
    url = signer.object_url("b12", "dir/a b+c~d é.txt", "us-east-1", "http://127.0.0.1:9000")
    assert url == "http://127.0.0.1:9000/b12/dir/a%20b%2Bc~d%20%C3%A9.txt"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bucket": ""}, "Bucket name '' is not valid"),
        ({"bucket": "Has_Upper"}, "Bucket name 'Has_Upper' is not valid"),
        ({"key": ""}, "The object key must not be empty."),
        ({"key": "é" * 513}, "longer than S3's limit of 1024 bytes"),
        ({"min_bytes": 10, "max_bytes": 9}, "min_bytes (10) is larger than max_bytes (9)."),
        ({"max_bytes": -1}, "Size limits must not be negative."),
        ({"expires_in": -5}, "expires_in must be a positive number of seconds."),
        ({"region": "US East"}, "Region 'US East' is not a region name"),
        ({"region": "../etc"}, "Region '../etc' is not a region name"),
        ({"success_action_status": "302"}, "success_action_status must be one of 200, 201, 204."),
        ({"metadata": {"bad name": "x"}}, "Metadata name 'bad name' must use only"),
        ({"now": datetime(2026, 1, 1)}, "`now` must be timezone-aware"),
    ],
)
def test_impossible_input_is_a_clear_error_not_a_bad_signature(credentials, now, changes, message):
    arguments = {
        "bucket": "uploads",
        "key": "k",
        "region": "us-east-1",
        "max_bytes": 5,
        "now": now,
        **changes,
    }
    with pytest.raises(SignerError) as error:
        signer.presigned_post(credentials, **arguments)
    assert message in str(error.value)


def test_a_1024_byte_key_is_accepted(credentials, now):
    form = signer.presigned_post(
        credentials, bucket="b12", key="é" * 512, region="us-east-1", max_bytes=5, now=now
    )
    assert form["fields"]["key"] == "é" * 512


def test_presigned_url_expiry_must_be_within_seven_days(credentials, now):
    with pytest.raises(SignerError, match="between 1 and 604800 seconds"):
        signer.presign_url(
            credentials, "GET", "https://b.s3.amazonaws.com/k", "us-east-1", expires_in=604801
        )


def test_credentials_repr_hides_the_secret_and_token():
    text = repr(Credentials("AKID", "very-secret", session_token="tok"))
    assert "very-secret" not in text
    assert "tok" not in text
    assert "AKID" in text


# --- botocore as the reference client ------------------------------------------------------------

regions = st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1", "auto"])
keys = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=60,
)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)
tokens = st.none() | st.text(
    st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40
)
endpoints = st.sampled_from([None, "http://127.0.0.1:9000", "https://minio.example.test"])


def boto_credentials(credentials: Credentials) -> BotoCredentials:
    return BotoCredentials(
        credentials.access_key, credentials.secret_key, credentials.session_token
    )


def botocore_presigned_url(credentials, method, url, region, expires, moment, headers=None):
    """The URL botocore's S3 query auth signs for the same request, at the same instant."""
    request = AWSRequest(method=method, url=url, headers=dict(headers or {}))
    with botocore_clock(moment):
        S3SigV4QueryAuth(boto_credentials(credentials), "s3", region, expires=expires).add_auth(
            request
        )
    return request.url


def botocore_clock(moment: datetime):
    """botocore reads the clock itself; pin it to the same instant (naive UTC, as it expects)."""
    return mock.patch(
        "botocore.auth.get_current_datetime", return_value=moment.replace(tzinfo=None)
    )


@given(
    key=keys,
    region=regions,
    moment=moments,
    token=tokens,
    endpoint=endpoints,
    expires=st.integers(1, 604800),
    method=st.sampled_from(["GET", "PUT", "HEAD"]),
)
def test_presigned_urls_equal_botocores_byte_for_byte(
    key, region, moment, token, endpoint, expires, method
):
    credentials = Credentials("AKIDEXAMPLE", "s3cr3t/+key", token)
    url = signer.object_url("bucket-1", key, region, endpoint)
    ours = signer.presign_url(credentials, method, url, region, expires_in=expires, now=moment)
    assert ours == botocore_presigned_url(credentials, method, url, region, expires, moment)


@given(
    key=keys,
    region=regions,
    moment=moments,
    token=tokens,
    payload=st.binary(max_size=64),
    method=st.sampled_from(["GET", "PUT", "HEAD", "DELETE"]),
    extra=st.dictionaries(
        st.sampled_from(["Content-Type", "Range", "x-amz-meta-a"]),
        st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20),
    ),
)
def test_header_signatures_equal_botocores(key, region, moment, token, payload, method, extra):
    credentials = Credentials("AKIDEXAMPLE", "s3cr3t/+key", token)
    url = signer.object_url("bucket-1", key, region, "http://127.0.0.1:9000")
    request = AWSRequest(method=method, url=url, headers=dict(extra), data=payload)
    with botocore_clock(moment):
        S3SigV4Auth(boto_credentials(credentials), "s3", region).add_auth(request)
    ours = signer.sign_request(
        credentials, method, url, region, headers=extra, payload=payload, now=moment
    )
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["x-amz-content-sha256"] == request.headers["X-Amz-Content-SHA256"]


@settings(max_examples=100, deadline=None)
@given(
    key=keys,
    region=regions,
    moment=moments,
    token=tokens,
    max_bytes=st.integers(1, 5 * 1024**3),
    content_type=st.sampled_from([None, "image/png", "image/"]),
)
def test_post_signatures_verify_under_botocores_key_derivation(
    key, region, moment, token, max_bytes, content_type
):
    credentials = Credentials("AKIDEXAMPLE", "s3cr3t/+key", token)
    form = signer.presigned_post(
        credentials,
        bucket="bucket-1",
        key=key,
        region=region,
        max_bytes=max_bytes,
        content_type=content_type,
        now=moment,
    )
    request = AWSRequest(method="POST", url=form["url"])
    request.context["timestamp"] = signer.amz_date(moment)
    reference = SigV4Auth(boto_credentials(credentials), "s3", region)
    assert (
        reference.signature(form["fields"]["policy"], request) == form["fields"]["x-amz-signature"]
    )


def test_botocores_own_post_policy_uses_the_same_fields(credentials, now):
    """Same conditions in boto3's generate_presigned_post: same field names, same credential.

    boto3 posts to the global host; we post to the regional one, which needs no 307 redirect
    for buckets outside us-east-1.
    """
    from boto3.session import Session
    from botocore.config import Config

    session = Session(credentials.access_key, credentials.secret_key, region_name="eu-west-1")
    client = session.client("s3", config=Config(signature_version="s3v4"))
    with botocore_clock(now):
        theirs = client.generate_presigned_post(
            "uploads",
            "a/b.png",
            Fields={"Content-Type": "image/png", "success_action_status": "201"},
            Conditions=[
                {"Content-Type": "image/png"},
                {"success_action_status": "201"},
                ["content-length-range", 1, 1000],
            ],
            ExpiresIn=300,
        )
    ours = signer.presigned_post(
        credentials,
        bucket="uploads",
        key="a/b.png",
        region="eu-west-1",
        max_bytes=1000,
        content_type="image/png",
        now=now,
    )
    assert theirs["url"] == "https://uploads.s3.amazonaws.com/"
    assert ours["url"] == "https://uploads.s3.eu-west-1.amazonaws.com/"
    assert set(ours["fields"]) == set(theirs["fields"])
    assert ours["fields"]["x-amz-credential"] == theirs["fields"]["x-amz-credential"]
    assert ours["fields"]["x-amz-date"] == theirs["fields"]["x-amz-date"]


# --- explain mode and the README -----------------------------------------------------------------


def run_signer(*arguments: str) -> str:
    result = subprocess.run(
        [sys.executable, "signer.py", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_explain_returns_the_steps_in_protocol_order():
    names = [step.name for step in signer.explain(["--now", "2026-01-01T00:00:00+00:00"])]
    assert names[0] == "Policy (JSON)"
    assert names.index("Credential scope") < names.index(
        "SigningKey = HMAC(DateRegionServiceKey, 'aws4_request')"
    )
    assert names[-2] == "Signature = hex(HMAC(SigningKey, StringToSign))"


@pytest.mark.parametrize("mode", ["", "--put "])
def test_explain_output_in_the_readme_is_what_the_command_prints(mode):
    readme = (ROOT / "README.md").read_text()
    now, key = "--now 2026-01-01T00:00:00+00:00", "--key uploads/cat.jpg"
    command = f"python signer.py explain {mode}{now} {key}"
    assert f"$ {command}\n" in readme
    block = readme.split(f"$ {command}\n", 1)[1].split("```", 1)[0]
    assert block == run_signer(*command.split()[2:])


def test_explain_rejects_impossible_input_with_a_message():
    result = subprocess.run(
        [sys.executable, "signer.py", "explain", "--bucket", "Bad_Bucket"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Bucket name 'Bad_Bucket' is not valid" in result.stderr


def test_presigned_post_expiry_follows_the_clock(credentials, now):
    form = signer.presigned_post(
        credentials, bucket="b12", key="k", region="us-east-1", max_bytes=5, expires_in=300, now=now
    )
    expiration = datetime.strptime(decoded_policy(form)["expiration"], "%Y-%m-%dT%H:%M:%S.000Z")
    assert expiration.replace(tzinfo=UTC) - now == timedelta(seconds=300) - timedelta(
        microseconds=0
    )


# --- presigned PUT: the signed headers carry the limits a POST policy gives ----------------------


def test_presigned_put_names_every_signed_header(credentials, now):
    url = signer.presign_url(
        credentials,
        "PUT",
        "http://127.0.0.1:9000/uploads/a.png",
        "us-east-1",
        headers={"Content-Type": "image/png", "Content-Length": "10"},
        now=now,
    )
    assert "X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost&" in url


def test_explain_put_aws_example_reproduces_the_published_hash_and_signature():
    """The query-auth example's canonical request hash is printed in AWS's documentation too."""
    steps = dict(signer.explain(["--put", "--aws-example"]))
    assert steps["Hash of the CanonicalRequest (SHA-256, hex)"] == (
        "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04"
    )
    assert steps["Matches AWS's published signature"] == "yes"


def test_explain_put_signs_the_exact_size_and_type():
    steps = dict(signer.explain(["--put", "--now", "2026-01-01T00:00:00+00:00", "--size", "2048"]))
    assert "content-length:2048\ncontent-type:image/jpeg\nhost:" in steps["CanonicalRequest"]
    assert steps["url"].endswith(
        "X-Amz-Signature=" + steps["Signature = hex(HMAC(SigningKey, StringToSign))"]
    )


@functools.lru_cache(maxsize=32)
def botocore_client(region: str, endpoint: str | None, token: str | None) -> Any:
    """botocore's S3 client, addressed as signer.bucket_url addresses S3: virtual-hosted on AWS's
    regional host (botocore's "auto" would presign for the global one), path-style elsewhere."""
    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="s3cr3t/+key",
        aws_session_token=token,
        config=BotoConfig(
            signature_version="s3v4", s3={"addressing_style": "path" if endpoint else "virtual"}
        ),
    )


# boto3 builds a client per region, endpoint and session token: about 150 ms an example, so a
# third of the profile's examples here (13 in make test and CI, 1,666 in make stress).
BOTO3_EXAMPLES = settings(max_examples=max(10, settings.default.max_examples // 3))


@BOTO3_EXAMPLES
@given(
    key=keys,
    region=regions,
    moment=moments,
    token=tokens,
    endpoint=endpoints,
    size=st.integers(1, 5 * 1024**3),
    content_type=st.sampled_from(["image/png", "application/pdf", "text/plain"]),
    filename=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    acl=st.sampled_from([None, "private", "public-read", "bucket-owner-full-control"]),
    expires=st.integers(1, 604800),
)
def test_presigned_put_is_botocores_generate_presigned_url_byte_for_byte(
    key, region, moment, token, endpoint, size, content_type, filename, acl, expires
):
    """What UPLOAD_METHOD=put hands the browser, against boto3's documented way to presign a
    PUT with the same size, type, metadata and ACL."""
    endpoint = endpoint or ("https://acct.r2.example.test" if region == "auto" else None)
    params = {
        "Bucket": "bucket-1",
        "Key": key,
        "ContentLength": size,
        "ContentType": content_type,
        "Metadata": {"filename": filename},
        **({"ACL": acl} if acl else {}),
    }
    with botocore_clock(moment):
        theirs = botocore_client(region, endpoint, token).generate_presigned_url(
            "put_object", Params=params, ExpiresIn=expires
        )
    ours = signer.presigned_put(
        Credentials("AKIDEXAMPLE", "s3cr3t/+key", token),
        bucket="bucket-1",
        key=key,
        region=region,
        endpoint=endpoint,
        size=size,
        max_bytes=5 * 1024**3,
        content_type=content_type,
        acl=acl,
        metadata={"filename": filename},
        expires_in=expires,
        now=moment,
    )
    assert ours["url"] == theirs


@pytest.mark.parametrize("size", [0, 11])
def test_presigned_put_refuses_to_sign_a_size_outside_the_range(credentials, now, size):
    with pytest.raises(SignerError, match=rf"size \({size}\) is outside the allowed \[1, 10\]"):
        signer.presigned_put(
            credentials, bucket="b12", key="k", region="us-east-1", size=size, max_bytes=10, now=now
        )


def test_presigned_put_returns_what_it_signed(credentials, now):
    put = signer.presigned_put(
        credentials,
        bucket="b12",
        key="a/b.png",
        region="us-east-1",
        size=10,
        max_bytes=10,
        content_type="image/png",
        metadata={"filename": "b.png"},
        now=now,
    )
    assert put["headers"] == {
        "Content-Length": "10",
        "Content-Type": "image/png",
        "x-amz-meta-filename": "b.png",
    }
    assert put["canonical_request"].splitlines()[:2] == ["PUT", "/a/b.png"]
    assert (
        put["string_to_sign"].splitlines()[-1]
        == signer.hashlib.sha256(put["canonical_request"].encode()).hexdigest()
    )
    assert put["url"].endswith(
        "X-Amz-Signature="
        + signer.signature(
            signer.signing_key(credentials.secret_key, "20260301", "us-east-1"),
            put["string_to_sign"],
        )
    )


def test_explain_put_aws_example_prints_every_step_and_the_verdict():
    output = run_signer("explain", "--put", "--aws-example")
    names = [line for line in output.splitlines() if line and not line.startswith(" ")]
    assert names == [
        "CanonicalRequest",
        "Hash of the CanonicalRequest (SHA-256, hex)",
        "StringToSign",
        "Credential scope",
        "DateKey = HMAC('AWS4' + secret, date)",
        "DateRegionKey = HMAC(DateKey, region)",
        "DateRegionServiceKey = HMAC(DateRegionKey, 's3')",
        "SigningKey = HMAC(DateRegionServiceKey, 'aws4_request')",
        "Signature = hex(HMAC(SigningKey, StringToSign))",
        "url",
        "Matches AWS's published signature",
    ]
    assert output.endswith("Matches AWS's published signature\n    yes\n")
    assert signer.AWS_URL_EXAMPLE_SIGNATURE in output
