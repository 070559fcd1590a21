"""A bucket's own settings, as S3 reports them: its region (HeadBucket), Object Ownership (are
ACLs enabled?) and lifecycle rules. `python server.py doctor` asks about each, and a local S3
configured wrongly on purpose is how its checks are tested.
https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html
https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketOwnershipControls.html
https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketLifecycleConfiguration.html
"""

from __future__ import annotations

from local_s3.config import S3Config
from local_s3.cors import S3_XMLNS
from local_s3.errors import XML_DECLARATION, S3Error, xml_elements
from s3_rules import BUCKET_OWNER_ENFORCED, OWNER_ENFORCED_ACL


def region_header(config: S3Config) -> dict[str, str]:
    """HeadBucket names the bucket's region whether or not the request was allowed, so a client
    signing for the wrong region learns the right one."""
    return {"x-amz-bucket-region": config.region}


def check_acl_allowed(config: S3Config, acl: str | None) -> None:
    """With Object Ownership "bucket owner enforced", ACLs are disabled: an upload naming any
    ACL but bucket-owner-full-control fails with 400 AccessControlListNotSupported.
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-ownership-error-responses.html
    """
    if config.object_ownership == BUCKET_OWNER_ENFORCED and acl not in (None, OWNER_ENFORCED_ACL):
        raise S3Error("AccessControlListNotSupported")


def ownership_controls_xml(config: S3Config, bucket: str) -> bytes:
    """GET ?ownershipControls: the bucket's one rule, or OwnershipControlsNotFoundError for a
    bucket that never set one (ACLs enabled, as on buckets made before April 2023)."""
    if config.object_ownership is None:
        raise S3Error("OwnershipControlsNotFoundError", BucketName=bucket)
    rule = xml_elements({"ObjectOwnership": config.object_ownership})
    return document("OwnershipControls", f"<Rule>{rule}</Rule>")


def lifecycle_xml(config: S3Config, bucket: str) -> bytes:
    """GET ?lifecycle: one bucket-wide rule aborting multipart uploads left incomplete for
    `abort_multipart_days`, or NoSuchLifecycleConfiguration."""
    if config.abort_multipart_days is None:
        raise S3Error("NoSuchLifecycleConfiguration", BucketName=bucket)
    days = xml_elements({"DaysAfterInitiation": config.abort_multipart_days})
    rule = (
        "<ID>abort-incomplete-multipart-uploads</ID><Filter><Prefix></Prefix></Filter>"
        f"<Status>Enabled</Status><AbortIncompleteMultipartUpload>{days}"
        "</AbortIncompleteMultipartUpload>"
    )
    return document("LifecycleConfiguration", f"<Rule>{rule}</Rule>")


def document(root: str, body: str) -> bytes:
    return f'{XML_DECLARATION}<{root} xmlns="{S3_XMLNS}">{body}</{root}>'.encode()
