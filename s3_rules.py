"""S3's documented limits and names, written once for the app and the local S3 alike.

Each fact cites the AWS page it comes from. The app signs within these limits; the local S3
refuses what breaks them, the way S3 does. A number that is ours and not S3's lives with the
code that chooses it, not here.
"""

from __future__ import annotations

import re
from datetime import timedelta

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# "The name for a key is a sequence of Unicode characters whose UTF-8 encoding is at most 1024
# bytes long."  https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html
MAX_KEY_BYTES = 1024

# "The PUT request header is limited to 8 KB in size. Within the PUT request header, the
# user-defined metadata is limited to 2 KB in size. The size of user-defined metadata is measured
# by taking the sum of the number of bytes in the UTF-8 encoding of each key and value."
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingMetadata.html
MAX_USER_METADATA_BYTES = 2 * KiB

# "The maximum allowed file size is 5 GB" for a POST Object upload.
# https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html
MAX_POST_OBJECT_BYTES = 5 * GiB

# Multipart upload limits: "Maximum object size 5 TiB; Maximum number of parts per upload
# 10,000; Part numbers 1 to 10,000 (inclusive); Part size 5 MiB to 5 GiB. There is no minimum
# size limit on the last part of your multipart upload."
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html
MAX_OBJECT_BYTES = 5 * 1024 * GiB
MAX_PARTS = 10_000
MIN_PART_BYTES = 5 * MiB
MAX_PART_BYTES = 5 * GiB

# "The form data and boundaries (excluding the contents of the file) cannot exceed 20KB."
# https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html
MAX_POST_PRE_DATA_BYTES = 20 * KiB

# "X-Amz-Expires ... Minimum value of 1. Maximum value of 604800 (seven days)."
# https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
MAX_PRESIGNED_EXPIRES = 7 * 24 * 3600

# A header-signed request whose X-Amz-Date is more than 15 minutes from S3's clock is refused
# with RequestTimeTooSkewed.
# https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html
MAX_CLOCK_SKEW = timedelta(minutes=15)

# The canned ACLs S3 accepts in x-amz-acl or a form's acl field.
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/acl-overview.html#canned-acl
CANNED_ACLS = frozenset(
    {
        "private",
        "public-read",
        "public-read-write",
        "aws-exec-read",
        "authenticated-read",
        "bucket-owner-read",
        "bucket-owner-full-control",
    }
)

# Object Ownership "bucket owner enforced" disables ACLs: an upload may then name no ACL, or
# only this one, else S3 answers 400 AccessControlListNotSupported.
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-ownership-error-responses.html
BUCKET_OWNER_ENFORCED = "BucketOwnerEnforced"
OWNER_ENFORCED_ACL = "bucket-owner-full-control"

# IAM access key ids: "Length Constraints: Minimum length of 16. Maximum length of 128.
# Pattern: [\w]+". AWS's own are 20 upper-case letters and digits (AKIA... long-term, ASIA...
# temporary), which is the shape the local S3 gives its own.
# https://docs.aws.amazon.com/IAM/latest/APIReference/API_AccessKey.html
ACCESS_KEY_ID = re.compile(r"\w{16,128}", re.ASCII)
ACCESS_KEY_ID_LENGTH = 20

# Bucket names: 3-63 lower-case letters, digits, dots and hyphens, starting and ending with a
# letter or digit, no two dots in a row.
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
BUCKET_NAME = re.compile(r"(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

# "Maximum number of parts returned for a list parts request 1000"; "Maximum number of multipart
# uploads returned in a list multipart uploads request 1000".
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html
MAX_LIST_PARTS = 1000
MAX_LIST_UPLOADS = 1000

# What S3 stores as an object's Content-Type when the upload names none.
# https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html
DEFAULT_CONTENT_TYPE = "binary/octet-stream"


def human_size(size: int) -> str:
    """10485760 -> "10 MB", 1 -> "1 byte": binary multiples, as browsers and file managers show
    sizes, so the limit the page states matches what the user's file manager says."""
    for unit, factor in (("TB", 1024 * GiB), ("GB", GiB), ("MB", MiB), ("KB", KiB)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return "1 byte" if size == 1 else f"{size} bytes"
