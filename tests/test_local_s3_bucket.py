"""The local S3's answers about a bucket's setup, each as S3 gives it: HeadBucket's region, the
Date of its clock, DeleteObject, Object Ownership (ACLs disabled), lifecycle rules, and a
service without POST Object. `python server.py doctor` reads them (tests/test_doctor.py)."""

import hashlib
import xml.etree.ElementTree as ET

import pytest
from conftest import browser_form, error_of, signed_s3_request

import local_s3
import signer

KEY = "uploads/probe.txt"
BODY = b"x"
S3_NS = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}


def put_object(app, credentials, now, headers=None, status="*"):
    return signed_s3_request(app, credentials, now, "PUT", f"/uploads/{KEY}", BODY, headers, status)


def post_object(app, credentials, now, acl=None):
    form = signer.presigned_post(
        credentials,
        bucket="uploads",
        key=KEY,
        region="us-east-1",
        endpoint="http://localhost",
        max_bytes=10,
        acl=acl,
        now=now,
    )
    content_type, body = browser_form(form["fields"], BODY)
    return app.post("/uploads/", body, {"Content-Type": content_type}, status="*")


# --- HeadBucket: the region, whoever asks ---


def test_head_bucket_is_200_with_the_region_and_no_body(s3_app, s3_credentials, s3_now):
    response = signed_s3_request(s3_app, s3_credentials, s3_now, "HEAD", "/uploads", status=200)

    assert response.headers["x-amz-bucket-region"] == "us-east-1"
    assert response.body == b""


def test_head_bucket_names_the_region_even_when_refused(make_s3_app, s3_credentials, s3_now):
    s3 = make_s3_app(region="eu-west-1")

    wrong_region = signed_s3_request(s3, s3_credentials, s3_now, "HEAD", "/uploads", status=400)
    unsigned = s3.head("/uploads", status=403)

    assert wrong_region.headers["x-amz-bucket-region"] == "eu-west-1"
    assert unsigned.headers["x-amz-bucket-region"] == "eu-west-1"


def test_head_of_a_missing_bucket_is_404_without_a_region(s3_app, s3_credentials, s3_now):
    response = signed_s3_request(s3_app, s3_credentials, s3_now, "HEAD", "/nope", status=404)

    assert "x-amz-bucket-region" not in response.headers


def test_only_head_bucket_names_the_region(s3_app, s3_credentials, s3_now):
    response = signed_s3_request(s3_app, s3_credentials, s3_now, "GET", "/uploads?cors")

    assert "x-amz-bucket-region" not in response.headers


def test_every_answer_is_dated_by_the_local_s3_clock(s3_app):
    """A client measures its clock skew against S3's Date header."""
    assert s3_app.get("/nope/key", status=404).headers["Date"] == "Thu, 01 Jan 2026 12:00:00 GMT"
    assert s3_app.head("/uploads", status=403).headers["Date"] == "Thu, 01 Jan 2026 12:00:00 GMT"


# --- DeleteObject ---


def test_delete_object_is_204_and_removes_the_object_and_its_bytes(
    s3_app, s3_config, s3_credentials, s3_now
):
    put_object(s3_app, s3_credentials, s3_now, status=200)

    response = signed_s3_request(s3_app, s3_credentials, s3_now, "DELETE", f"/uploads/{KEY}")

    assert (response.status_int, response.body) == (204, b"")
    assert local_s3.stored_object(s3_config, "uploads", KEY) is None
    assert local_s3.leftover_files(s3_config) == []


def test_deleting_a_missing_key_is_also_204(s3_app, s3_credentials, s3_now):
    path = "/uploads/never/there"
    assert signed_s3_request(s3_app, s3_credentials, s3_now, "DELETE", path).status_int == 204


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "without s3:DeleteObject"])
def test_delete_without_permission_is_access_denied_and_keeps_the_object(
    make_s3_app, s3_config, s3_credentials, s3_now, signed
):
    s3 = make_s3_app(denied_actions=frozenset({"s3:DeleteObject"}))
    put_object(s3, s3_credentials, s3_now, status=200)

    if signed:
        response = signed_s3_request(s3, s3_credentials, s3_now, "DELETE", f"/uploads/{KEY}")
    else:
        response = s3.delete(f"/uploads/{KEY}", status="*")

    assert response.status_int == 403
    assert error_of(response)[:2] == ("AccessDenied", "Access Denied")
    assert local_s3.stored_object(s3_config, "uploads", KEY) is not None


# --- Object Ownership: ACLs disabled ---


def test_a_bucket_without_ownership_controls_says_so(s3_app, s3_credentials, s3_now):
    response = signed_s3_request(
        s3_app, s3_credentials, s3_now, "GET", "/uploads?ownershipControls"
    )

    assert response.status_int == 404
    code, message, elements = error_of(response)
    assert (code, message) == (
        "OwnershipControlsNotFoundError",
        "The bucket ownership controls were not found",
    )
    assert elements["BucketName"] == "uploads"


def test_ownership_controls_name_the_bucket_owner_enforced_setting(
    make_s3_app, s3_credentials, s3_now
):
    s3 = make_s3_app(object_ownership="BucketOwnerEnforced")
    path = "/uploads?ownershipControls"

    response = signed_s3_request(s3, s3_credentials, s3_now, "GET", path, status=200)

    rule = ET.fromstring(response.body).find("s3:Rule/s3:ObjectOwnership", S3_NS)
    assert rule.text == "BucketOwnerEnforced"


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize(
    ("acl", "stored"),
    [
        ("public-read", False),
        ("private", False),
        ("bucket-owner-full-control", True),
        (None, True),
    ],
)
def test_with_acls_disabled_only_the_owner_acl_or_none_is_accepted(
    make_s3_app, s3_config, s3_credentials, s3_now, method, acl, stored
):
    s3 = make_s3_app(object_ownership="BucketOwnerEnforced")
    if method == "POST":
        response = post_object(s3, s3_credentials, s3_now, acl)
    else:
        response = put_object(s3, s3_credentials, s3_now, {"x-amz-acl": acl} if acl else None)

    if stored:
        assert response.status_int in (200, 201)
        assert response.headers["ETag"] == f'"{hashlib.md5(BODY).hexdigest()}"'
    else:
        assert response.status_int == 400
        assert error_of(response)[:2] == (
            "AccessControlListNotSupported",
            "The bucket does not allow ACLs",
        )
        assert local_s3.stored_object(s3_config, "uploads", KEY) is None
    assert local_s3.leftover_files(s3_config) == []


def test_acls_are_accepted_while_ownership_is_not_enforced(s3_app, s3_credentials, s3_now):
    response = post_object(s3_app, s3_credentials, s3_now, "public-read")

    assert response.status_int == 201


# --- lifecycle ---


def test_a_bucket_without_lifecycle_rules_says_so(s3_app, s3_credentials, s3_now):
    response = signed_s3_request(s3_app, s3_credentials, s3_now, "GET", "/uploads?lifecycle")

    assert response.status_int == 404
    code, message, elements = error_of(response)
    assert (code, message) == (
        "NoSuchLifecycleConfiguration",
        "The lifecycle configuration does not exist",
    )
    assert elements["BucketName"] == "uploads"


def test_lifecycle_rule_aborts_incomplete_multipart_uploads(make_s3_app, s3_credentials, s3_now):
    s3 = make_s3_app(abort_multipart_days=2)

    response = signed_s3_request(s3, s3_credentials, s3_now, "GET", "/uploads?lifecycle")

    days = "s3:Rule/s3:AbortIncompleteMultipartUpload/s3:DaysAfterInitiation"
    root = ET.fromstring(response.body)
    assert root.find(days, S3_NS).text == "2"
    assert root.find("s3:Rule/s3:Status", S3_NS).text == "Enabled"


@pytest.mark.parametrize(
    ("query", "action"),
    [
        ("ownershipControls", "s3:GetBucketOwnershipControls"),
        ("lifecycle", "s3:GetLifecycleConfiguration"),
        ("cors", "s3:GetBucketCORS"),
    ],
)
def test_bucket_settings_need_their_permission(make_s3_app, s3_credentials, s3_now, query, action):
    s3 = make_s3_app(denied_actions=frozenset({action}))

    response = signed_s3_request(s3, s3_credentials, s3_now, "GET", f"/uploads?{query}")

    assert response.status_int == 403
    assert error_of(response)[0] == "AccessDenied"


# --- a service without POST Object (Cloudflare R2) ---


def test_without_post_object_a_form_upload_is_501_and_stores_nothing(
    make_s3_app, s3_config, s3_credentials, s3_now
):
    s3 = make_s3_app(post_object=False)

    response = post_object(s3, s3_credentials, s3_now)

    assert response.status_int == 501
    assert error_of(response)[:2] == (
        "NotImplemented",
        "Presigned post requests are not yet implemented",
    )
    assert local_s3.stored_object(s3_config, "uploads", KEY) is None
    assert put_object(s3, s3_credentials, s3_now).status_int == 200
