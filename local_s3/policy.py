"""Step 2 of a POST Object: the policy, its signature, its expiry and every condition, checked
when the file part begins, in S3's order.
https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import signer
from local_s3.config import S3Config
from local_s3.errors import S3Error, invalid_argument, missing_field
from local_s3.sigv4 import (
    ONLY_SIGV4,
    CredentialScope,
    check_credential_date,
    parse_amz_date,
    parse_credential,
    secret_for,
    signatures_match,
)

# https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html
EXPIRATION = re.compile(
    r"(?P<seconds>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.(?P<fraction>[0-9]+))?Z"
)
# "Each form field that you specify in a form (except x-amz-signature, file, policy, and field
# names that have an x-ignore- prefix) must appear in the list of conditions."
UNCONDITIONED_FIELDS = frozenset({"policy", "x-amz-signature", "file"})
# The POST policy conditions table: only these (and x-amz-meta-*) accept "starts-with".
STARTS_WITH_FIELDS = frozenset(
    {
        "acl",
        "key",
        "cache-control",
        "content-type",
        "content-disposition",
        "content-encoding",
        "expires",
        "success_action_redirect",
        "redirect",
    }
)


def verify_post_form(
    fields: Mapping[str, str], bucket: str, config: S3Config, now: datetime
) -> Policy:
    """Everything S3 checks before accepting the first byte of the file, in S3's order.

    `fields` are the form fields sent before the file, names lowercased, ${filename} expanded.
    """
    if "key" not in fields:
        raise missing_field("key")
    if "policy" not in fields:
        raise S3Error("AccessDenied")  # no policy: an anonymous upload, and the bucket is private
    policy = parse_policy(fields["policy"])
    credential = post_credential(fields, config.region)
    if "x-amz-security-token" in fields:
        raise S3Error("InvalidToken", Token=fields["x-amz-security-token"])
    verify_post_signature(fields, credential, config)
    if now >= policy.expiration:
        raise S3Error("AccessDenied", "Invalid according to Policy: Policy expired.")
    check_conditions(policy.conditions, {**fields, "bucket": bucket})
    check_extra_fields(fields, policy.conditions)
    return policy


def expand_filename(fields: Mapping[str, str], filename: str | None) -> dict[str, str]:
    """S3 replaces ${filename} in every field before checking the policy, with the name of the
    uploaded file: only the text after the last slash or backslash, or "" when none was sent."""
    name = re.split(r"[/\\]", filename or "")[-1]
    return {
        field_name: value
        if field_name in ("policy", "x-amz-signature")
        else value.replace("${filename}", name)
        for field_name, value in fields.items()
    }


# --- the policy document ---


@dataclass(frozen=True)
class Condition:
    """One policy condition. `source` is how S3 quotes it back: ["eq", "$key", "a.txt"]."""

    operator: str  # "eq", "starts-with" or "content-length-range"
    field: str  # lowercased form field name, without "$"
    value: str | tuple[int, int]
    source: str


@dataclass(frozen=True)
class Policy:
    expiration: datetime
    conditions: tuple[Condition, ...]

    def size_range(self, max_body_bytes: int) -> tuple[int, int]:
        """All content-length-range conditions must hold, and S3's own 5 GB limit too."""
        low, high = 0, max_body_bytes
        for condition in self.conditions:
            if condition.operator == "content-length-range":
                low, high = max(low, condition.value[0]), min(high, condition.value[1])
        return low, high


def invalid_policy(detail: str) -> S3Error:
    return S3Error("InvalidPolicyDocument", f"Invalid Policy: {detail}")


def parse_policy(policy_base64: str) -> Policy:
    """The policy field is base64 of a UTF-8 JSON document with expiration and conditions."""
    try:
        document = json.loads(base64.b64decode(policy_base64, validate=True))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: [[[[...]]]]
        raise invalid_policy("Invalid JSON.") from None
    if not isinstance(document, dict):
        raise invalid_policy("Invalid JSON.")
    if "expiration" not in document:
        raise invalid_policy("Policy missing expiration.")
    conditions = document.get("conditions")
    if not isinstance(conditions, list):
        raise invalid_policy("Policy missing conditions.")
    expiration = parse_expiration(document["expiration"])
    return Policy(expiration, tuple(parse_condition(item) for item in conditions))


def parse_expiration(value: object) -> datetime:
    """ "The expiration date ... in ISO 8601 UTC date format", e.g. 2007-12-01T12:00:00.000Z:
    S3 refuses another offset (+00:00, +02:00), a space for the T, or no seconds. How many
    digits of a second it takes AWS does not say; any, as ISO 8601 allows (kept to the
    microsecond)."""
    match = EXPIRATION.fullmatch(value) if isinstance(value, str) else None
    try:
        if match:
            moment = datetime.strptime(match["seconds"], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
            return moment.replace(microsecond=int((match["fraction"] or "0")[:6].ljust(6, "0")))
    except ValueError:
        pass  # e.g. month 13
    raise invalid_policy(f"Invalid 'expiration' value: '{value}'")


def parse_condition(item: object) -> Condition:
    """Exact match {"field": "value"}, or a list: ["eq" | "starts-with", "$field", "value"] or
    ["content-length-range", min, max]."""
    if isinstance(item, dict):
        if len(item) != 1:
            raise invalid_policy(
                "Invalid Simple-Condition: Simple-Conditions must have exactly one property "
                "specified."
            )
        [(name, value)] = item.items()
        return field_condition("eq", f"${name}", value)
    if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)):
        raise invalid_policy(f"Invalid Condition: {json.dumps(item)}")
    operator = item[0].lower()
    if operator == "content-length-range":
        return length_condition(item[1], item[2])
    if operator in ("eq", "starts-with"):
        return field_condition(operator, item[1], item[2])
    raise invalid_policy(f"Invalid Condition Operator: {item[0]}")


def field_condition(operator: str, name: object, value: object) -> Condition:
    source = json.dumps([operator, name, value], ensure_ascii=False)
    if not (isinstance(name, str) and name.startswith("$") and isinstance(value, str)):
        raise invalid_policy(f"Invalid Condition: {source}")
    return Condition(operator, name[1:].lower(), value, source)


def length_condition(low: object, high: object) -> Condition:
    source = json.dumps(["content-length-range", low, high])
    bounds_are_ints = all(type(bound) is int for bound in (low, high))
    if not bounds_are_ints or not 0 <= low <= high:
        raise invalid_policy(f"Invalid content-length-range: {source}")
    return Condition("content-length-range", "", (low, high), source)


# --- who signed it ---


def post_credential(fields: Mapping[str, str], region: str) -> CredentialScope:
    """x-amz-algorithm, x-amz-credential and x-amz-date: present, well-formed and consistent."""
    for name in ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature"):
        if name not in fields:
            raise missing_field(name)
    if fields["x-amz-algorithm"] != signer.ALGORITHM:
        raise invalid_field("x-amz-algorithm", fields, ONLY_SIGV4)
    try:
        credential = parse_credential(fields["x-amz-credential"], region)
    except ValueError as problem:
        raise invalid_field("x-amz-credential", fields, str(problem), Region=region) from None
    try:
        parse_amz_date(fields["x-amz-date"])
        check_credential_date(credential, fields["x-amz-date"])
    except ValueError as problem:
        raise invalid_field("x-amz-date", fields, str(problem)) from None
    return credential


def invalid_field(name: str, fields: Mapping[str, str], problem: str, **extra) -> S3Error:
    return invalid_argument(name, fields[name], problem, **extra)


def verify_post_signature(
    fields: Mapping[str, str], credential: CredentialScope, config: S3Config
) -> None:
    """For a POST, the string to sign is the base64 policy itself, exactly as sent."""
    secret = secret_for(config, credential.access_key)
    key = signer.signing_key(secret, credential.date, credential.region, credential.service)
    expected = signer.signature(key, fields["policy"])
    if not signatures_match(expected, fields["x-amz-signature"]):
        raise S3Error(
            "SignatureDoesNotMatch",
            AWSAccessKeyId=credential.access_key,
            StringToSign=fields["policy"],
            SignatureProvided=fields["x-amz-signature"],
        )


# --- every condition, and nothing the conditions do not cover ---


def check_conditions(conditions: tuple[Condition, ...], values: Mapping[str, str]) -> None:
    for condition in conditions:
        if not condition_holds(condition, values):
            raise S3Error(
                "AccessDenied",
                f"Invalid according to Policy: Policy Condition failed: {condition.source}",
            )


def condition_holds(condition: Condition, values: Mapping[str, str]) -> bool:
    """A condition on a field the form did not send fails. Sizes are checked while streaming."""
    if condition.operator == "content-length-range":
        return True
    value = values.get(condition.field)
    if value is None:
        return False
    if condition.operator == "eq":
        return value == condition.value
    if not allows_starts_with(condition.field):
        return False
    if condition.field == "content-type":
        # "Content-Types values for a starts-with condition that include commas are interpreted
        # as lists. Each value in the list must meet the condition for the whole to pass."
        return all(part.strip().startswith(condition.value) for part in value.split(","))
    return value.startswith(condition.value)


def allows_starts_with(name: str) -> bool:
    return name in STARTS_WITH_FIELDS or name.startswith("x-amz-meta-")


def check_extra_fields(fields: Mapping[str, str], conditions: tuple[Condition, ...]) -> None:
    covered = {condition.field for condition in conditions}
    for name in fields:
        exempt = name in UNCONDITIONED_FIELDS or name.startswith("x-ignore-")
        if not exempt and name not in covered:
            raise S3Error(
                "AccessDenied", f"Invalid according to Policy: Extra input fields: {name}"
            )
