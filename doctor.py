"""`python server.py doctor`: will uploads work with this bucket and these credentials?

Each check asks S3 one question, the way the app and the browser will, and answers in a
sentence with its fix. The checks are pure functions of S3's answers (status, headers, XML
body) to a Finding, so each can be read next to the AWS page it follows and tested against a
local S3 configured wrongly on purpose; `run` asks the questions, in an order where each answer
makes sense of the next, every request bounded by S3_TIMEOUT. Nothing printed ever holds a
secret: findings quote only codes, S3's messages, regions, origins, keys and times.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TextIO
from xml.etree import ElementTree

import filenames
import s3_client
import signer
from local_s3.cors import CorsRule, cors_configuration_xml, matching_rule, parse_cors_configuration
from local_s3.errors import S3Error
from s3_client import Reply, S3Failure
from s3_rules import BUCKET_OWNER_ENFORCED, MAX_CLOCK_SKEW, OWNER_ENFORCED_ACL
from settings import Config

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
CLOCK_WARNING = timedelta(seconds=60)
PROBE_FILENAME = "doctor-probe.txt"
PROBE_TYPE = "text/plain"
PROBE_BODY = b"x"
PROBE_METADATA = {"filename": filenames.encode_metadata(PROBE_FILENAME)}
UPLOAD_OK = (200, 201, 204)


@dataclass(frozen=True)
class Finding:
    """One check's verdict (ok, warn, FAIL or skip), what was found, and what to do about it."""

    check: str
    verdict: str
    sentence: str
    fix: str = ""


# ---- S3's answers: the error code and elements of its XML ------------------------------------


def error_code(reply: Reply) -> str:
    """The <Code> of S3's XML error; "" for a success, or a body that is not S3's XML (a HEAD
    answer has no body at all)."""
    return error_element(reply, "Code")


def error_element(reply: Reply, name: str) -> str:
    root = xml_root(reply)
    found = root.find(name) if root is not None and root.tag == "Error" else None
    return (found.text or "").strip() if found is not None else ""


def xml_root(reply: Reply) -> ElementTree.Element | None:
    try:
        return ElementTree.fromstring(reply.body) if reply.body else None
    except ElementTree.ParseError:
        return None


def said(reply: Reply) -> str:
    """What S3 answered, for a sentence: "403 AccessDenied: Access Denied"."""
    code, message = error_code(reply), error_element(reply, "Message")
    return f"{reply.status} {code}: {message}" if code else f"HTTP {reply.status}"


def s3_time(reply: Reply) -> datetime | None:
    try:
        return parsedate_to_datetime(reply.headers.get("Date", "")).astimezone(UTC)
    except (TypeError, ValueError):
        return None


# ---- Reaching S3 at all ----------------------------------------------------------------------


def unreachable(failure: S3Failure, config: Config) -> Finding:
    """s3_client gives up at S3_TIMEOUT (504) or when nothing answers (502)."""
    where = config.endpoint or signer.bucket_url(config.bucket, config.region)
    if failure.status == 504:
        sentence = f"S3 at {where} did not answer within S3_TIMEOUT ({config.s3_timeout:g} s)."
    else:
        sentence = f"S3 at {where} could not be reached."
    fix = "Check AWS_ENDPOINT_URL_S3 (or AWS_REGION) and that this machine can reach it."
    return Finding("S3", FAIL, sentence, fix)


# ---- Credentials and bucket: HEAD /BUCKET, then GET of a key that does not exist -------------
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html
# https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html

CREDENTIAL_PROBLEMS = {
    "InvalidAccessKeyId": (
        "S3 does not know the access key id in AWS_ACCESS_KEY_ID.",
        "Copy the key id again from the IAM console, or create a new access key.",
    ),
    "SignatureDoesNotMatch": (
        "S3 knows the access key id, but AWS_SECRET_ACCESS_KEY is not its secret key.",
        "Copy the secret key again (the IAM console shows it only once), or create a new key.",
    ),
    "InvalidToken": (
        "S3 refused the session token in AWS_SESSION_TOKEN.",
        "Take the key id, secret key and session token from the same temporary credentials.",
    ),
    "ExpiredToken": (
        "The temporary credentials have expired.",
        "Ask for fresh temporary credentials and restart the app.",
    ),
}
# S3 refuses these before it looks at the signature.
NOT_AUTHENTICATED = (
    "AuthorizationHeaderMalformed",
    "PermanentRedirect",
    "NoSuchBucket",
    "RequestTimeTooSkewed",
)


def check_credentials(probe: Reply) -> Finding:
    """A signed GET that S3 authenticates, whatever it answers then (NoSuchKey, or AccessDenied
    without s3:ListBucket), proves the key pair."""
    code = error_code(probe)
    if code in CREDENTIAL_PROBLEMS:
        sentence, fix = CREDENTIAL_PROBLEMS[code]
        return Finding("Credentials", FAIL, f"{sentence} (S3 answered {code}.)", fix)
    if code in NOT_AUTHENTICATED or probe.status == 301:
        return Finding("Credentials", SKIP, "Not checked: S3 refused the request before that.")
    return Finding("Credentials", OK, "S3 accepted a request signed with these credentials.")


def check_bucket(head: Reply, probe: Reply, bucket: str, region: str) -> Finding:
    """The bucket exists and lives in AWS_REGION. S3 names a bucket's region in HeadBucket's
    x-amz-bucket-region (even when it refuses the request), or in the <Region> of
    AuthorizationHeaderMalformed when a request is signed for another region."""
    actual = head.headers.get("x-amz-bucket-region") or error_element(probe, "Region")
    if head.status == 404 or error_code(probe) == "NoSuchBucket":
        fix = "Check S3_BUCKET (and AWS_ENDPOINT_URL_S3), or create the bucket."
        return Finding("Bucket", FAIL, f"There is no bucket named {bucket}.", fix)
    if actual and actual != region:
        sentence = f"The bucket {bucket} is in {actual}, not in {region} (AWS_REGION)."
        return Finding("Bucket", FAIL, sentence, f"Set AWS_REGION={actual}.")
    if probe.status == 301 or error_code(probe) == "PermanentRedirect":
        endpoint = error_element(probe, "Endpoint") or "another endpoint"
        sentence = f"S3 sends requests for {bucket} to {endpoint}: it is in another region."
        return Finding("Bucket", FAIL, sentence, "Set AWS_REGION to the bucket's region.")
    return Finding("Bucket", OK, f"The bucket {bucket} exists in {region}.")


# ---- Clock: S3's Date header -----------------------------------------------------------------
# https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-authenticating-requests.html


def check_clock(reply: Reply, now: datetime, policy_ttl: int) -> Finding:
    """S3 refuses a request signed more than 15 minutes off its clock (RequestTimeTooSkewed),
    and judges a form's expiration and a presigned URL's X-Amz-Expires by its own clock: a
    machine behind S3 by more than UPLOAD_POLICY_TTL signs forms that are already expired."""
    moment = s3_time(reply)
    if moment is None:
        return Finding("Clock", WARN, "S3 sent no Date header, so the clocks were not compared.")
    skew = now - moment
    direction = "ahead of" if skew > timedelta(0) else "behind"
    sentence = f"This machine's clock is {abs(skew.total_seconds()):.0f} s {direction} S3's"
    fix = "Synchronise the clock with NTP (systemd-timesyncd, chrony)."
    if abs(skew) > MAX_CLOCK_SKEW:
        return Finding("Clock", FAIL, f"{sentence}: S3 refuses requests 15 minutes off.", fix)
    if -skew > timedelta(seconds=policy_ttl):
        expired = (
            f"{sentence}: its forms have expired by S3's clock (UPLOAD_POLICY_TTL={policy_ttl})."
        )
        return Finding("Clock", FAIL, expired, fix)
    if abs(skew) > CLOCK_WARNING:
        warned = f"{sentence}: forms live {policy_ttl} s by this clock, not by S3's."
        return Finding("Clock", WARN, warned, fix)
    return Finding("Clock", OK, "This machine's clock agrees with S3's (within a minute).")


# ---- CORS: GET /BUCKET?cors ------------------------------------------------------------------
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketCors.html
# S3's own matching rules are local_s3/cors.py's, the embedded S3's: one place for that fact.


def cors_rule_for(origins: Sequence[str]) -> dict[str, Any]:
    """The rule the doctor recommends and --fix-cors applies, as the AWS console's JSON: the
    README's rule. POST for forms, PUT for presigned PUTs and for the parts of large files."""
    return {
        "AllowedOrigins": list(origins),
        "AllowedMethods": ["POST", "PUT", "GET", "HEAD"],
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["ETag", "Location"],
        "MaxAgeSeconds": 3000,
    }


def console_json(rule: Mapping[str, Any]) -> str:
    """The S3 console's CORS editor takes a JSON list of rules; one line per field, as in the
    README."""
    fields = ",\n".join(
        f"    {json.dumps(name)}: {json.dumps(value)}" for name, value in rule.items()
    )
    return f"[\n  {{\n{fields}\n  }}\n]"


def cors_rule(rule: Mapping[str, Any]) -> CorsRule:
    return CorsRule(
        tuple(rule["AllowedOrigins"]),
        tuple(rule["AllowedMethods"]),
        tuple(rule["AllowedHeaders"]),
        tuple(rule["ExposeHeaders"]),
        rule["MaxAgeSeconds"],
    )


def bucket_cors_rules(reply: Reply) -> tuple[CorsRule, ...] | None:
    """The bucket's rules; () for NoSuchCORSConfiguration; None when they could not be read."""
    if error_code(reply) == "NoSuchCORSConfiguration":
        return ()
    if reply.status != 200:
        return None
    try:
        return parse_cors_configuration(reply.body)
    except S3Error:
        return None


def upload_headers(method: str, acl: str | None) -> tuple[str, ...]:
    """The request headers a browser's upload sends that need a rule's AllowedHeader. A form
    POST sends only safelisted ones; a PUT sends its signed headers."""
    if method == "POST":
        return ()
    return ("content-type", "x-amz-meta-filename") + (("x-amz-acl",) if acl else ())


def browser_requests(method: str, acl: str | None) -> list[tuple[str, tuple[str, ...]]]:
    """What a browser sends the bucket: its uploads by `method`, and the PUT of each part of a
    file over UPLOAD_MULTIPART_THRESHOLD (a Blob slice: no header to allow)."""
    requests = [(method, upload_headers(method, acl))]
    return requests if method == "PUT" else [*requests, ("PUT", ())]


def cors_problem(rules: tuple[CorsRule, ...], origin: str, method: str, headers: tuple) -> str:
    """Why the browser's upload from `origin` fails, or "". The preflight needs a rule for the
    origin, method and headers; the upload's answer then carries the first rule matching the
    origin and method, whose ExposeHeader must name ETag for the page to read it."""
    if matching_rule(rules, origin, method, headers) is None:
        return f"no rule allows a {method} from {origin}"
    first = matching_rule(rules, origin, method)
    if not any(name.lower() == "etag" for name in first.expose):
        return f"the rule for {method} from {origin} does not expose ETag"
    return ""


def check_cors(reply: Reply, origins: Sequence[str], method: str, acl: str | None) -> Finding:
    """Browsers upload from the app's origin: the bucket's CORS rules must let them send the
    upload and read the ETag the page reports to the app."""
    rule = cors_rule_for(origins)
    xml = cors_configuration_xml((cors_rule(rule),)).decode().partition("\n")[2]
    fix = (
        "Run `python server.py doctor --fix-cors` to add this rule before the bucket's others,\n"
        f"or add it in the S3 console (Permissions, CORS):\n{console_json(rule)}\n"
        f"or send it with PutBucketCors:\n{xml}"
    )
    rules = bucket_cors_rules(reply)
    if rules is None:
        sentence = f"The bucket's CORS rules could not be read ({said(reply)})."
        return Finding("CORS", WARN, sentence, "Allow s3:GetBucketCORS, or check them by hand.")
    if not rules:
        return Finding("CORS", FAIL, "The bucket has no CORS rules: browsers cannot upload.", fix)
    problems = [
        problem
        for origin in origins
        for sent, headers in browser_requests(method, acl)
        if (problem := cors_problem(rules, origin, sent, headers))
    ]
    if problems:
        return Finding("CORS", FAIL, f"The bucket's CORS rules fail: {'; '.join(problems)}.", fix)
    methods = " and ".join(dict.fromkeys(sent for sent, _ in browser_requests(method, acl)))
    allowed = f"CORS lets {', '.join(origins)} upload by {methods} and read the ETag."
    return Finding("CORS", OK, allowed)


def cors_with_rule(reply: Reply, origins: Sequence[str]) -> bytes:
    """PutBucketCors' body for --fix-cors: our rule first (S3 answers with the first matching
    rule), then the bucket's other rules."""
    ours = cors_rule(cors_rule_for(origins))
    return cors_configuration_xml((ours, *(bucket_cors_rules(reply) or ())))


def check_cors_fixed(reply: Reply) -> Finding:
    if reply.status == 200:
        return Finding("CORS fix", OK, "The rule was added to the bucket's CORS rules.")
    fix = "Allow s3:PutBucketCORS for this run, or apply the rule by hand."
    return Finding("CORS fix", FAIL, f"S3 refused the new CORS rules ({said(reply)}).", fix)


# ---- ACLs: GET /BUCKET?ownershipControls ------------------------------------------------------
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-ownership-error-responses.html


def check_ownership(reply: Reply, acl: str | None) -> Finding:
    """With Object Ownership "bucket owner enforced", ACLs are disabled: S3 refuses an upload
    naming any ACL but bucket-owner-full-control (400 AccessControlListNotSupported)."""
    if acl is None:
        return Finding(
            "ACLs", OK, "S3_ACL is unset: uploads name no ACL, which every bucket takes."
        )
    root = xml_root(reply) if reply.status == 200 else None
    found = root.findtext(".//{*}ObjectOwnership") if root is not None else None
    if reply.status != 200 and error_code(reply) != "OwnershipControlsNotFoundError":
        sentence = f"Object Ownership could not be read ({said(reply)}); S3_ACL={acl} may fail."
        fix = "Allow s3:GetBucketOwnershipControls, or check Object Ownership in the S3 console."
        return Finding("ACLs", WARN, sentence, fix)
    if found == BUCKET_OWNER_ENFORCED and acl != OWNER_ENFORCED_ACL:
        sentence = f"S3_ACL is {acl}, but the bucket has ACLs disabled (bucket owner enforced)."
        fix = "Unset S3_ACL and grant access with a bucket policy, or enable ACLs on the bucket."
        return Finding("ACLs", FAIL, sentence, fix)
    return Finding("ACLs", OK, f"The bucket accepts uploads with S3_ACL={acl}.")


# ---- Can a browser upload at all: a 1-byte probe, then DELETE --------------------------------


def probe_key(prefix: str) -> str:
    return f"{prefix}/doctor-probe-{uuid.uuid4()}.txt"


def check_upload(reply: Reply, method: str, key: str) -> Finding:
    """Some S3-compatible services (Cloudflare R2, Backblaze B2) implement no POST Object: a
    presigned PUT then keeps the same limits."""
    if reply.status in UPLOAD_OK:
        sentence = f"A 1-byte {method} upload to {key}, signed as the app signs it, was accepted."
        return Finding("Upload", OK, sentence)
    code = error_code(reply)
    sentence = f"A 1-byte {method} upload was refused ({said(reply)})."
    if method == "POST" and (reply.status in (405, 501) or code == "NotImplemented"):
        sentence = f"This endpoint does not accept browser POST uploads ({said(reply)})."
        fix = "Set UPLOAD_METHOD=put: the app then signs a PUT for each file, with the same limits."
    elif error_element(reply, "Message").endswith("Policy expired."):
        fix = "Synchronise this machine's clock with NTP: S3 judges expiry by its own clock."
    elif code == "AccessDenied":
        fix = "Allow s3:PutObject on the upload prefix (see the IAM policy in the README)."
    elif code == "AccessControlListNotSupported":
        fix = "Unset S3_ACL: this bucket has ACLs disabled."
    else:
        fix = "S3's message above says what it refused."
    return Finding("Upload", FAIL, sentence, fix)


def check_cleanup(reply: Reply, bucket: str, key: str) -> Finding:
    if reply.status in (200, 204):
        return Finding("Cleanup", OK, "The probe object was deleted.")
    sentence = f"The probe object stays at s3://{bucket}/{key}: DELETE was refused ({said(reply)})."
    fix = "Delete it by hand, or allow s3:DeleteObject on the upload prefix."
    return Finding("Cleanup", WARN, sentence, fix)


# ---- Multipart: GET /BUCKET?lifecycle --------------------------------------------------------
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpu-abort-incomplete-mpu-lifecycle-config.html

LIFECYCLE_RULE = {
    "Rules": [
        {
            "ID": "abort-incomplete-multipart-uploads",
            "Filter": {},
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
    ]
}


def check_lifecycle(reply: Reply, bucket: str) -> Finding:
    """Parts of an abandoned multipart upload are stored, and billed, until the upload is
    aborted; a lifecycle rule does that. A warning only: uploads work without it."""
    root = xml_root(reply) if reply.status == 200 else None
    abort = ".//{*}AbortIncompleteMultipartUpload/{*}DaysAfterInitiation"
    days = root.findtext(abort) if root is not None else None
    if days:
        return Finding("Lifecycle", OK, f"Incomplete multipart uploads are aborted after {days} d.")
    if reply.status == 200 or error_code(reply) == "NoSuchLifecycleConfiguration":
        sentence = "No lifecycle rule aborts incomplete multipart uploads; their parts stay billed."
    else:
        sentence = f"The lifecycle rules could not be read ({said(reply)})."
    fix = (
        f"Add a rule with `aws s3api put-bucket-lifecycle-configuration --bucket {bucket} "
        f"--lifecycle-configuration '{json.dumps(LIFECYCLE_RULE)}'` (replaces existing rules)."
    )
    return Finding("Lifecycle", WARN, sentence, fix)


def check_upload_list(reply: Reply, prefix: str) -> Finding:
    """The list of uploads lives in the bucket (registry.py): listing it is ListObjectsV2 on
    its prefix, which needs s3:ListBucket there; writing a record is a PUT like an upload's."""
    if reply.status == 200:
        return Finding("Upload list", OK, f"The upload list ({prefix}/) can be read.")
    sentence = f"The upload list ({prefix}/) cannot be listed ({said(reply)})."
    fix = f"Allow s3:ListBucket on the bucket for the prefix {prefix}/* (README: IAM policy)."
    return Finding("Upload list", FAIL, sentence, fix)


# ---- The runner: the questions, in order -----------------------------------------------------

PostTarget = Callable[[Config, str], dict[str, Any]]


def run(
    config: Config,
    origins: Sequence[str],
    post_target: PostTarget,
    *,
    method: str = "post",
    fix_cors: bool = False,
    now: datetime | None = None,
) -> list[Finding]:
    """Every check against the configured bucket, in order. Stops at the first request S3
    does not answer in time, and when the credentials or the bucket fail (nothing else can
    be asked then)."""
    visit = Visit(config, tuple(origins), post_target, method.upper(), now or datetime.now(UTC))
    findings: list[Finding] = []
    try:
        findings += visit.access()
        if any(finding.verdict == FAIL for finding in findings[:2]):
            return [*findings, Finding("Other checks", SKIP, "Not run: fix the above first.")]
        findings += visit.cors(fix_cors)
        ownership = visit.send("GET", query={"ownershipControls": ""})
        findings.append(check_ownership(ownership, config.acl))
        findings += visit.upload()
        prefix = config.registry_prefix
        listing = visit.send(
            "GET", query={"list-type": "2", "prefix": prefix + "/", "max-keys": "1"}
        )
        findings.append(check_upload_list(listing, prefix))
        lifecycle = visit.send("GET", query={"lifecycle": ""})
        findings.append(check_lifecycle(lifecycle, config.bucket))
    except S3Failure as failure:
        findings.append(unreachable(failure, config))
    return findings


@dataclass
class Visit:
    """One run's requests, all signed at `now`: S3's own time once the clock check fails, so
    the checks after it still say something."""

    config: Config
    origins: tuple[str, ...]
    post_target: PostTarget
    method: str
    now: datetime

    def send(
        self,
        method: str,
        key: str = "",
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Reply:
        return s3_client.send(self.config, method, key, query, headers, body, now=self.now)

    def access(self) -> list[Finding]:
        """HEAD the bucket (its region, S3's Date), then GET a key that does not exist."""
        head = self.send("HEAD")
        clock = check_clock(head, self.now, self.config.policy_ttl)
        if clock.verdict == FAIL and s3_time(head):
            self.now = s3_time(head)
        probe = self.send("GET", probe_key(self.config.key_prefix))
        bucket = check_bucket(head, probe, self.config.bucket, self.config.region)
        return [check_credentials(probe), bucket, clock]

    def cors(self, fix: bool) -> list[Finding]:
        """GetBucketCors; with --fix-cors, PutBucketCors and the rules read again."""
        reply = self.send("GET", query={"cors": ""})
        finding = check_cors(reply, self.origins, self.method, self.config.acl)
        if not fix or finding.verdict != FAIL:
            return [finding]
        fixed = self.put_cors(cors_with_rule(reply, self.origins))
        if fixed.status == 200:
            reply = self.send("GET", query={"cors": ""})
            finding = check_cors(reply, self.origins, self.method, self.config.acl)
        return [check_cors_fixed(fixed), finding]

    def put_cors(self, body: bytes) -> Reply:
        """PutBucketCors requires Content-MD5 (or a checksum header).
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketCors.html"""
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        headers = {"Content-MD5": md5, "Content-Type": "application/xml"}
        return self.send("PUT", query={"cors": ""}, headers=headers, body=body)

    def upload(self) -> list[Finding]:
        """The 1-byte probe, then DeleteObject."""
        key = probe_key(self.config.key_prefix)
        reply = self.post_probe(key) if self.method == "POST" else self.put_probe(key)
        findings = [check_upload(reply, self.method, key)]
        if reply.status in UPLOAD_OK:
            findings.append(check_cleanup(self.send("DELETE", key), self.config.bucket, key))
        return findings

    def post_probe(self, key: str) -> Reply:
        """Signed exactly as the app signs a browser's form (server.s3_credentials)."""
        form = signer.presigned_post(
            self.config.credentials,
            **self.post_target(self.config, key),
            content_type=PROBE_TYPE,
            metadata=PROBE_METADATA,
            success_action_status="201",
            now=self.now,
        )
        return s3_client.post_form(self.config, form, PROBE_BODY, PROBE_FILENAME)

    def put_probe(self, key: str) -> Reply:
        """A presigned PUT covering the exact length, type, filename and ACL (issue 16's PUT)."""
        config = self.config
        headers = {"Content-Length": str(len(PROBE_BODY)), "Content-Type": PROBE_TYPE}
        headers |= {f"x-amz-meta-{name}": value for name, value in PROBE_METADATA.items()}
        headers |= {"x-amz-acl": config.acl} if config.acl else {}
        url = signer.presign_url(
            config.credentials,
            "PUT",
            signer.object_url(config.bucket, key, config.region, config.endpoint),
            config.region,
            headers=headers,
            expires_in=config.policy_ttl,
            now=self.now,
        )
        return s3_client.put_presigned(config, url, headers, PROBE_BODY)


# ---- The report ------------------------------------------------------------------------------


def report(findings: Iterable[Finding]) -> str:
    """One line per check, its fix indented beneath it, then the verdict."""
    findings = list(findings)
    lines = []
    for finding in findings:
        lines.append(f"{finding.verdict:<4}  {finding.check}: {finding.sentence}")
        lines += [f"      {line}".rstrip() for line in finding.fix.splitlines()]
    failures = count(sum(finding.verdict == FAIL for finding in findings), "problem")
    warnings = count(sum(finding.verdict == WARN for finding in findings), "warning")
    if failures.startswith("no"):
        lines.append(f"\nUploads should work ({warnings}).")
    else:
        lines.append(f"\n{failures.capitalize()} would break uploads ({warnings}).")
    return "\n".join(lines)


def count(number: int, noun: str) -> str:
    return f"{number or 'no'} {noun}{'s' * (number != 1)}"


def exit_status(findings: Iterable[Finding]) -> int:
    """Non-zero when anything would break uploads; warnings alone do not."""
    return 1 if any(finding.verdict == FAIL for finding in findings) else 0


def main(
    config: Config,
    origins: Sequence[str],
    post_target: PostTarget,
    out: TextIO,
    *,
    method: str = "post",
    fix_cors: bool = False,
) -> int:
    """`python server.py doctor [--fix-cors]`: the report on `out`, and the exit status."""
    where = "embedded local S3" if config.embedded else config.endpoint or "AWS"
    print(f"Checking bucket {config.bucket} in {config.region} ({where}):\n", file=out)
    findings = run(config, origins, post_target, method=method, fix_cors=fix_cors)
    print(report(findings), file=out)
    return exit_status(findings)
