"""S3's errors, as S3's error-code page lists them: one table of code, HTTP status and default
message, one exception that carries a code and its extra XML elements, one function that
renders S3's XML.  https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html

Where AWS documents no message for a situation, the message passed to S3Error is ours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class ErrorCode(NamedTuple):
    status: int
    message: str


# fmt: off
ERRORS: Mapping[str, ErrorCode] = {
    "AccessControlListNotSupported": ErrorCode(400, "The bucket does not allow ACLs"),
    "AccessDenied": ErrorCode(403, "Access Denied"),
    "AuthorizationHeaderMalformed": ErrorCode(
        400, "The authorization header that you provided is not valid."),
    "AuthorizationQueryParametersError": ErrorCode(
        400, "Query-string authentication version 4 requires the X-Amz-Algorithm, "
        "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires "
        "parameters."),
    "BadDigest": ErrorCode(400, "The Content-MD5 you specified did not match what we received."),
    "BadRequest": ErrorCode(400, "Bad Request"),
    "EntityTooLarge": ErrorCode(400, "Your proposed upload exceeds the maximum allowed size"),
    "EntityTooSmall": ErrorCode(
        400, "Your proposed upload is smaller than the minimum allowed object size."),
    "IncompleteBody": ErrorCode(
        400, "You did not provide the number of bytes specified by the Content-Length HTTP "
        "header"),
    "InternalError": ErrorCode(500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": ErrorCode(
        403, "The AWS Access Key Id you provided does not exist in our records."),
    "InvalidArgument": ErrorCode(400, "Invalid Argument"),
    "InvalidDigest": ErrorCode(400, "The Content-MD5 you specified is not valid."),
    "InvalidPart": ErrorCode(
        400, "One or more of the specified parts could not be found.  The part may not have "
        "been uploaded, or the specified entity tag may not match the part's entity tag."),
    "InvalidPartOrder": ErrorCode(
        400, "The list of parts was not in ascending order. The parts list must be specified in "
        "order by part number."),
    "InvalidPolicyDocument": ErrorCode(
        400, "The content of the form does not meet the conditions specified in the policy "
        "document."),
    "InvalidRequest": ErrorCode(400, "Invalid Request"),
    # This S3 issues no temporary credentials, so any session token is one it cannot know.
    "InvalidToken": ErrorCode(400, "The provided token is malformed or otherwise invalid."),
    "KeyTooLongError": ErrorCode(400, "Your key is too long"),
    "MalformedPOSTRequest": ErrorCode(
        400, "The body of your POST request is not well-formed multipart/form-data."),
    "MalformedXML": ErrorCode(
        400, "The XML you provided was not well-formed or did not validate against our "
        "published schema"),
    "MaxPostPreDataLengthExceededError": ErrorCode(
        400, "Your POST request fields preceding the upload file were too large."),
    "MetadataTooLarge": ErrorCode(
        400, "Your metadata headers exceed the maximum allowed metadata size."),
    "MethodNotAllowed": ErrorCode(
        405, "The specified method is not allowed against this resource."),
    "MissingContentLength": ErrorCode(411, "You must provide the Content-Length HTTP header."),
    "NoSuchBucket": ErrorCode(404, "The specified bucket does not exist"),
    "NoSuchCORSConfiguration": ErrorCode(404, "The CORS configuration does not exist"),
    "NoSuchKey": ErrorCode(404, "The specified key does not exist."),
    "NoSuchLifecycleConfiguration": ErrorCode(
        404, "The lifecycle configuration does not exist"),
    "NoSuchUpload": ErrorCode(
        404, "The specified upload does not exist. The upload ID may be invalid, or the upload "
        "may have been aborted or completed."),
    "NotImplemented": ErrorCode(
        501, "A header you provided implies functionality that is not implemented"),
    "OwnershipControlsNotFoundError": ErrorCode(
        404, "The bucket ownership controls were not found"),
    "PreconditionFailed": ErrorCode(
        412, "At least one of the pre-conditions you specified did not hold"),
    "RequestTimeout": ErrorCode(
        400, "Your socket connection to the server was not read from or written to within the "
        "timeout period. Idle connections will be closed."),
    "RequestTimeTooSkewed": ErrorCode(
        403, "The difference between the request time and the current time is too large."),
    "SignatureDoesNotMatch": ErrorCode(
        403, "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method."),
    "UnexpectedContent": ErrorCode(400, "This request does not support content."),
    "XAmzContentSHA256Mismatch": ErrorCode(
        400, "The provided 'x-amz-content-sha256' header does not match what was computed."),
}
# fmt: on


class S3Error(Exception):
    """An S3 error response: a code from ERRORS, its message (or the table's), and the extra
    elements S3 adds for that error, in order (SignatureDoesNotMatch carries the StringToSign
    S3 computed: comparing it with yours is how you find the bug)."""

    def __init__(self, code: str, message: str | None = None, **elements: object) -> None:
        self.code = code
        self.status, default = ERRORS[code]
        self.message = message or default
        self.elements = elements
        super().__init__(f"{code}: {self.message}")


def xml_text(value: object) -> str:
    """Escaped text for an XML element; characters XML 1.0 cannot carry become U+FFFD."""
    return XML_ILLEGAL.sub("\ufffd", str(value)).replace("&", "&amp;").replace("<", "&lt;")


def xml_elements(elements: Mapping[str, object] | list[tuple[str, object]]) -> str:
    pairs = elements.items() if isinstance(elements, Mapping) else elements
    return "".join(f"<{name}>{xml_text(value)}</{name}>" for name, value in pairs)


def xml_document(root: str, elements: Mapping[str, object]) -> bytes:
    return f"{XML_DECLARATION}<{root}>{xml_elements(elements)}</{root}>".encode()


def error_xml(error: S3Error, request_id: str, host_id: str) -> bytes:
    """S3's error body: Code, Message, the error's own elements, then RequestId and HostId."""
    elements = {"Code": error.code, "Message": error.message, **error.elements}
    return xml_document("Error", {**elements, "RequestId": request_id, "HostId": host_id})


def invalid_argument(name: str, value: object, message: str | None = None, **extra) -> S3Error:
    """InvalidArgument names the argument and the value it refused."""
    return S3Error("InvalidArgument", message, ArgumentName=name, ArgumentValue=value, **extra)


def missing_field(name: str) -> S3Error:
    """S3's answer when a required field is absent, or was sent after the file (and ignored)."""
    return invalid_argument(
        name,
        "",
        f"Bucket POST must contain a field named '{name}'.  "
        "If it is specified, please check the order of the fields.",
    )
