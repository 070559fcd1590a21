"""An embedded, strict Amazon S3 for browser uploads: POST Object, GET/HEAD/PUT/DELETE Object,
multipart uploads (create, parts, list, complete, abort: multipart.py), CORS (the configured
origins, or the bucket's rules set with PUT ?cors), and what the setup doctor asks about a
bucket (HeadBucket, ownership controls, lifecycle: bucket.py).

It is not a stand-in that accepts anything. Every upload is checked the way Amazon S3 checks it
(form fields, policy document, SigV4 signature, expiry, each policy condition, the size range)
and every failure answers with S3's status code and S3's XML error, so code that works here
works against AWS. Real S3 is the reference; the rules come from its documentation:

- POST Object: https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html
- POST policy: https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html
- Errors:      https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html
- Query auth:  https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
- CORS:        https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketCors.html
- Multipart:   https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html

The files follow a request in S3's order: form.py (the multipart form, streamed), policy.py
(the POST policy) and sigv4.py (signatures), checksums.py (x-amz-checksum-*), objects.py
(what is kept with an object), storage.py (stored atomically), cors.py, routes.py (the WSGI
app and its answers), errors.py (S3's error table) and serving.py (cheroot). Run it alone (the
secret key is written to DATA/credentials, never printed):

    python -m local_s3 --port 9000 --data ./data --bucket uploads

Where AWS documents no exact answer, the choices made here (kept strict, and marked in the code):
a POST without `policy` is an anonymous upload to a private bucket (AccessDenied); a starts-with
condition on a field that allows only exact matches fails like any unmet condition; a condition
on a field the form did not send fails; a field sent twice before the file is InvalidArgument;
the InvalidPolicyDocument texts other than "Invalid Policy: Invalid JSON." are ours; an upload
over the maximum reports as ProposedSize the bytes received when reading stopped; a PUT or POST
without Content-Length is MissingContentLength; a GET, HEAD, DELETE or OPTIONS with a body is
UnexpectedContent, refused unread; SignedHeaders that are not lowercase names are malformed.
"""

from local_s3.config import S3Config, new_credentials
from local_s3.errors import ERRORS, S3Error
from local_s3.multipart import MultipartUpload, multipart_etag, multipart_uploads
from local_s3.policy import expand_filename, verify_post_form
from local_s3.routes import create_app
from local_s3.serving import LocalS3
from local_s3.storage import StoredObject, leftover_files, list_objects, stored_object

__all__ = [
    "ERRORS",
    "LocalS3",
    "MultipartUpload",
    "S3Config",
    "S3Error",
    "StoredObject",
    "create_app",
    "expand_filename",
    "leftover_files",
    "list_objects",
    "multipart_etag",
    "multipart_uploads",
    "new_credentials",
    "stored_object",
    "verify_post_form",
]
