"""`python server.py doctor`: against a local S3 configured rightly, and wrongly on purpose in
each way a real bucket can be (wrong region, skewed clock, CORS without ETag, no browser POST,
ACLs disabled while S3_ACL is set, no such bucket, bad credentials, no S3 at all)."""

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path

import leak_scan
import pytest
from conftest import (
    S3_TEST_ACCESS_KEY,
    S3_TEST_ORIGIN,
    S3_TEST_SECRET_KEY,
    app_config,
    closed_port_url,
    doctor_output,
)

import doctor
import local_s3
import s3_client
import signer
from s3_client import Reply

ROOT = Path(__file__).resolve().parent.parent
ORIGINS = (S3_TEST_ORIGIN,)
CREDENTIALS = signer.Credentials(S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY)
# What S3 keeps when nothing lingers: the embedded S3 is configured this way.
RIGHT = {"abort_multipart_days": 1}
CORS_WITHOUT_ETAG = (
    b'<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><CORSRule>'
    b"<ID>photos</ID><AllowedOrigin>http://app.test</AllowedOrigin>"
    b"<AllowedMethod>POST</AllowedMethod><AllowedHeader>*</AllowedHeader>"
    b"</CORSRule></CORSConfiguration>"
)


def target(s3, **settings):
    """The app's settings for the local S3 `s3`, bucket "uploads"."""
    config = app_config(credentials=CREDENTIALS, endpoint=s3.url, s3_timeout=5)
    return dataclasses.replace(config, **settings)


def verdicts(report):
    """{check: verdict} of a report's lines."""
    return dict(
        (check, verdict)
        for verdict, check in re.findall(r"^(ok|warn|FAIL|skip) +([\w ]+):", report, re.M)
    )


def doctor_on(s3, options=None, **settings):
    return doctor_output(target(s3, **settings), ORIGINS, **(options or {}))


# --- a right setup passes every check ---


def test_a_right_setup_passes_every_check_and_leaves_no_probe(start_s3):
    s3 = start_s3(**RIGHT)

    status, report = doctor_on(s3)

    assert status == 0
    assert verdicts(report) == {
        "Credentials": "ok",
        "Bucket": "ok",
        "Clock": "ok",
        "CORS": "ok",
        "ACLs": "ok",
        "Upload": "ok",
        "Cleanup": "ok",
        "Upload list": "ok",
        "Lifecycle": "ok",
    }
    assert local_s3.list_objects(s3.config) == []
    assert report.endswith("\n\nUploads should work (no warnings).\n")


def test_the_probe_is_a_one_byte_upload_below_the_prefix_signed_as_the_app_signs(start_s3):
    s3 = start_s3(**RIGHT, denied_actions=frozenset({"s3:DeleteObject"}))

    report = doctor_on(s3, key_prefix="media/in")[1]

    (stored,) = local_s3.list_objects(s3.config)
    assert re.fullmatch(r"media/in/doctor-probe-[0-9a-f-]{36}\.txt", stored.key)
    assert (stored.size, stored.content_type) == (1, "text/plain")
    assert stored.metadata == {"x-amz-meta-filename": "doctor-probe.txt"}
    assert f"s3://uploads/{stored.key}" in report


# --- credentials ---


@pytest.mark.parametrize(
    ("credentials", "code", "fix"),
    [
        (
            signer.Credentials("AKIDUNKNOWN000000000", S3_TEST_SECRET_KEY),
            "InvalidAccessKeyId",
            "Copy the key id again",
        ),
        (
            signer.Credentials(S3_TEST_ACCESS_KEY, "wrong-secret/0123456789abcdefghijklmnop"),
            "SignatureDoesNotMatch",
            "Copy the secret key again",
        ),
    ],
    ids=["unknown key id", "wrong secret"],
)
def test_bad_credentials_are_explained_and_stop_the_other_checks(
    running_s3, credentials, code, fix
):
    leak_scan.add_secret(credentials.secret_key)

    status, report = doctor_on(running_s3, credentials=credentials)

    assert status == 1
    assert "FAIL  Credentials: " in report and f"(S3 answered {code}.)" in report
    assert fix in report
    assert verdicts(report)["Other checks"] == "skip"
    assert "Upload" not in verdicts(report)


# --- bucket and region ---


def test_a_missing_bucket_is_named(running_s3):
    status, report = doctor_on(running_s3, bucket="no-such-bucket")

    assert status == 1
    assert "FAIL  Bucket: There is no bucket named no-such-bucket." in report
    assert "Check S3_BUCKET (and AWS_ENDPOINT_URL_S3), or create the bucket." in report


def test_a_bucket_in_another_region_names_the_right_region(start_s3):
    s3 = start_s3(region="eu-west-1")

    status, report = doctor_on(s3, region="us-east-1")

    assert status == 1
    assert "FAIL  Bucket: The bucket uploads is in eu-west-1, not in us-east-1 (AWS_REGION)." in (
        report
    )
    assert "      Set AWS_REGION=eu-west-1." in report
    assert verdicts(report)["Credentials"] == "skip"


# --- clock ---


@pytest.mark.parametrize(
    ("s3_ahead", "verdict", "words"),
    [
        (timedelta(seconds=20), "ok", r"agrees with S3's \(within a minute\)\."),
        (timedelta(minutes=-2), "warn", r"1[12]\d s ahead of S3's: forms live 300 s by this"),
        (timedelta(minutes=6), "FAIL", r"3[56]\d s behind S3's: its forms have expired by S3's"),
        (timedelta(minutes=-20), "FAIL", r"1[12]\d\d s ahead of S3's: S3 refuses requests 15"),
    ],
)
def test_clock_skew_is_measured_against_s3s_date(start_s3, s3_ahead, verdict, words):
    """S3's Date has whole seconds, so the skew measured may be a second less."""
    s3 = start_s3(**RIGHT, clock=lambda: datetime.now(UTC) + s3_ahead)

    status, report = doctor_on(s3)

    assert verdicts(report)["Clock"] == verdict
    assert re.search(words, report)
    assert status == (1 if verdict == "FAIL" else 0)
    assert verdicts(report)["Upload"] == "ok"  # checked with S3's time when the clock fails


def test_clock_check_reads_s3s_date_header():
    now = datetime(2026, 12, 2, 1, 2, 3, tzinfo=UTC)

    def answer(date):
        headers = Message()
        if date:
            headers["Date"] = date
        return Reply(200, headers, b"")

    assert doctor.check_clock(answer("Wed, 02 Dec 2026 01:02:03 GMT"), now, 300).verdict == "ok"
    assert doctor.check_clock(answer("Wed, 02 Dec 2026 01:00:00 GMT"), now, 300).verdict == "warn"
    assert doctor.check_clock(answer("Wed, 02 Dec 2026 00:40:00 GMT"), now, 300).verdict == "FAIL"
    assert doctor.check_clock(answer(None), now, 300).verdict == "warn"


# --- CORS ---


def put_cors(s3, body):
    s3_client.send(target(s3), "PUT", "", {"cors": ""}, {}, body, now=datetime.now(UTC))


def get_cors(s3):
    return s3_client.send(target(s3), "GET", "", {"cors": ""}, now=datetime.now(UTC))


def test_cors_without_etag_fails_with_the_exact_rule_to_apply(running_s3):
    put_cors(running_s3, CORS_WITHOUT_ETAG)

    status, report = doctor_on(running_s3)

    assert status == 1
    assert "FAIL  CORS: The bucket's CORS rules fail: the rule for POST from http://app.test " in (
        report
    )
    assert '"ExposeHeaders": ["ETag", "Location"]' in report
    assert "<ExposeHeader>ETag</ExposeHeader>" in report


def test_fix_cors_adds_the_rule_first_and_keeps_the_others(start_s3):
    s3 = start_s3(**RIGHT)
    put_cors(s3, CORS_WITHOUT_ETAG)

    status, report = doctor_on(s3, {"fix_cors": True})

    assert status == 0
    assert "ok    CORS fix: The rule was added to the bucket's CORS rules." in report
    assert verdicts(report)["CORS"] == "ok"
    rules = doctor.bucket_cors_rules(get_cors(s3))
    assert [(rule.methods, rule.expose) for rule in rules] == [
        (("POST", "PUT", "GET", "HEAD"), ("ETag", "Location")),
        (("POST",), ()),
    ]


def test_fix_cors_changes_nothing_when_the_rules_are_right(start_s3):
    s3 = start_s3(**RIGHT)
    before = get_cors(s3).body

    status, report = doctor_on(s3, {"fix_cors": True})

    assert (status, get_cors(s3).body) == (0, before)
    assert "CORS fix" not in report


@pytest.mark.parametrize(
    ("cors_origins", "words"),
    [
        ((), "The bucket has no CORS rules: browsers cannot upload."),
        (("http://other.test",), "no rule allows a POST from http://app.test"),
    ],
)
def test_cors_that_refuses_the_page_fails(start_s3, cors_origins, words):
    s3 = start_s3(**RIGHT, cors_origins=cors_origins)

    status, report = doctor_on(s3)

    assert status == 1
    assert words in report


# --- ACLs and browser POST ---


def test_acls_disabled_while_s3_acl_is_set_fails_twice_with_the_fix(start_s3):
    s3 = start_s3(**RIGHT, object_ownership="BucketOwnerEnforced")

    status, report = doctor_on(s3, acl="public-read")

    assert status == 1
    assert (
        "FAIL  ACLs: S3_ACL is public-read, but the bucket has ACLs disabled (bucket owner "
        "enforced)." in report
    )
    assert "400 AccessControlListNotSupported: The bucket does not allow ACLs" in report
    assert "Unset S3_ACL: this bucket has ACLs disabled." in report


@pytest.mark.parametrize("acl", [None, "bucket-owner-full-control"])
def test_acls_disabled_is_fine_without_an_acl_or_with_the_owner_acl(start_s3, acl):
    s3 = start_s3(**RIGHT, object_ownership="BucketOwnerEnforced")

    status, report = doctor_on(s3, acl=acl)

    assert (status, verdicts(report)["ACLs"], verdicts(report)["Upload"]) == (0, "ok", "ok")


def test_an_endpoint_without_browser_post_recommends_put(start_s3):
    s3 = start_s3(**RIGHT, post_object=False)

    status, report = doctor_on(s3)

    assert status == 1
    assert (
        "FAIL  Upload: This endpoint does not accept browser POST uploads (501 NotImplemented: "
        "Presigned post requests are not yet implemented)." in report
    )
    assert "Set UPLOAD_METHOD=put" in report


def test_with_put_the_probe_is_a_presigned_put_which_such_an_endpoint_takes(start_s3):
    s3 = start_s3(**RIGHT, post_object=False)

    status, report = doctor_on(s3, {"method": "put"})

    assert status == 0
    assert "ok    Upload: A 1-byte PUT upload" in report
    assert "CORS lets http://app.test upload by PUT" in report


def test_with_put_cors_must_allow_put_and_the_signed_headers(running_s3):
    put_cors(running_s3, CORS_WITHOUT_ETAG.replace(b"<AllowedHeader>*</AllowedHeader>", b""))

    report = doctor_on(running_s3, {"method": "put"})[1]

    assert "no rule allows a PUT from http://app.test" in report
    assert '"AllowedMethods": ["POST", "PUT", "GET", "HEAD"]' in report


def test_a_probe_that_cannot_be_deleted_says_where_it_stays(start_s3):
    s3 = start_s3(**RIGHT, denied_actions=frozenset({"s3:DeleteObject"}))

    status, report = doctor_on(s3)

    (stored,) = local_s3.list_objects(s3.config)
    assert status == 0
    assert (
        f"warn  Cleanup: The probe object stays at s3://uploads/{stored.key}: DELETE was refused "
        "(403 AccessDenied: Access Denied)." in report
    )
    assert "allow s3:DeleteObject on the upload prefix" in report


# --- lifecycle, and settings the credentials may not read ---


def test_no_lifecycle_rule_is_only_a_warning(running_s3):
    status, report = doctor_on(running_s3)

    assert status == 0
    assert "warn  Lifecycle: No lifecycle rule aborts incomplete multipart uploads" in report
    assert "put-bucket-lifecycle-configuration" in report


@pytest.mark.parametrize(
    ("action", "check", "words"),
    [
        ("s3:GetBucketCORS", "CORS", "Allow s3:GetBucketCORS"),
        ("s3:GetBucketOwnershipControls", "ACLs", "Allow s3:GetBucketOwnershipControls"),
        ("s3:GetLifecycleConfiguration", "Lifecycle", "could not be read (403 AccessDenied"),
    ],
)
def test_settings_the_credentials_may_not_read_are_warnings(start_s3, action, check, words):
    s3 = start_s3(**RIGHT, denied_actions=frozenset({action}))

    status, report = doctor_on(s3, acl="private")

    assert (status, verdicts(report)[check]) == (0, "warn")
    assert words in report


def test_without_listing_the_upload_list_the_doctor_fails_and_says_what_to_allow(start_s3):
    s3 = start_s3(**RIGHT, denied_actions=frozenset({"s3:ListBucket"}))

    status, report = doctor_on(s3)

    assert (status, verdicts(report)["Upload list"]) == (1, "FAIL")
    assert "Allow s3:ListBucket on the bucket for the prefix registry/*" in report


def test_with_only_the_permissions_uploads_need_the_doctor_warns_and_passes(start_s3):
    """The README's IAM policy: objects under the two prefixes, listing the registry's."""
    optional = {
        "s3:GetBucketCORS",
        "s3:GetBucketOwnershipControls",
        "s3:GetLifecycleConfiguration",
        "s3:DeleteObject",
    }
    s3 = start_s3(denied_actions=frozenset(optional))

    status, report = doctor_on(s3)

    assert status == 0
    assert verdicts(report) == {
        "Credentials": "ok",
        "Bucket": "ok",
        "Clock": "ok",
        "CORS": "warn",
        "ACLs": "ok",
        "Upload": "ok",
        "Cleanup": "warn",
        "Upload list": "ok",
        "Lifecycle": "warn",
    }


def test_the_readme_cors_rule_is_the_one_the_doctor_recommends():
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r'```json\n(\{\n  "CORSRules".*?)```', readme, re.S)[1]

    rule = doctor.cors_rule_for(["http://127.0.0.1:8080"])

    assert json.loads(shown) == {"CORSRules": [rule]}


def test_help_lists_the_doctor_command(tmp_path):
    result = run_server(tmp_path, "--help")

    assert "{cleanup,doctor,migrate}" in result.stdout
    assert "--fix-cors" in result.stdout


# --- no S3 at all: said within the timeout ---


def test_an_unreachable_endpoint_is_said_at_once(tmp_path):
    config = app_config(credentials=CREDENTIALS, endpoint=closed_port_url(), s3_timeout=1)

    status, report = doctor_output(config, ORIGINS)

    assert status == 1
    assert re.search(r"FAIL  S3: S3 at http://127.0.0.1:\d+ could not be reached\.", report)


def test_an_endpoint_that_never_answers_is_given_up_at_s3_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections are accepted by the kernel, and never answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        config = app_config(credentials=CREDENTIALS, endpoint=url, s3_timeout=1)

        status, report = doctor_output(config, ORIGINS)

    assert status == 1
    assert f"FAIL  S3: S3 at {url} did not answer within S3_TIMEOUT (1 s)." in report


# --- pure checks: answers the local S3 never gives, real S3 does ---


def reply(status, body=b"", **headers):
    message = Message()
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    return Reply(status, message, body)


def test_a_permanent_redirect_names_the_region_from_its_header():
    head = reply(301, x_amz_bucket_region="ap-south-1")
    probe = reply(301, b"<Error><Code>PermanentRedirect</Code><Endpoint>e</Endpoint></Error>")

    finding = doctor.check_bucket(head, probe, "photos", "us-east-1")

    assert (finding.verdict, finding.fix) == ("FAIL", "Set AWS_REGION=ap-south-1.")


def test_a_permanent_redirect_without_a_region_names_the_endpoint():
    body = b"<Error><Code>PermanentRedirect</Code><Endpoint>photos.s3.amazonaws.com</Endpoint>"
    finding = doctor.check_bucket(reply(301), reply(301, body + b"</Error>"), "photos", "eu-west-1")

    assert finding.verdict == "FAIL"
    assert "photos.s3.amazonaws.com" in finding.sentence


@pytest.mark.parametrize(
    "code", ["RequestTimeTooSkewed", "AuthorizationHeaderMalformed", "NoSuchBucket"]
)
def test_credentials_are_not_judged_when_s3_refused_before_checking_them(code):
    probe = reply(403, f"<Error><Code>{code}</Code></Error>".encode())

    assert doctor.check_credentials(probe).verdict == "skip"


def test_expired_session_credentials_are_explained():
    probe = reply(400, b"<Error><Code>ExpiredToken</Code><Message>x</Message></Error>")

    finding = doctor.check_credentials(probe)

    assert (finding.verdict, finding.fix) == (
        "FAIL",
        "Ask for fresh temporary credentials and restart the app.",
    )


# --- the command line: python server.py doctor, and make doctor ---


def run_server(tmp_path, *args, **env):
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "UPLOAD_"))},
        "DATA_DIR": str(tmp_path / "data"),
        "S3_PORT": "0",
        **env,
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), *args],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    leak_scan.scan_text("python server.py doctor", result.stdout + result.stderr)
    return result


def test_server_doctor_with_no_bucket_checks_a_fresh_embedded_s3_all_green(tmp_path):
    result = run_server(tmp_path, "doctor")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Checking bucket uploads in us-east-1 (embedded local S3):" in result.stdout
    assert set(verdicts(result.stdout).values()) == {"ok"}
    assert len(verdicts(result.stdout)) == 9


def test_server_doctor_exits_non_zero_when_uploads_would_break(tmp_path):
    result = run_server(tmp_path, "doctor", S3_BUCKET="uploads", AWS_REGION="eu-west-1",
                        AWS_ACCESS_KEY_ID="AKIDNOWHERE000000000",
                        AWS_SECRET_ACCESS_KEY="not-a-secret-anyone-uses-0000000000000000",
                        AWS_ENDPOINT_URL_S3=closed_port_url(), S3_TIMEOUT="1")  # fmt: skip

    assert result.returncode == 1
    assert "could not be reached" in result.stdout


def test_make_doctor_runs_the_doctor_after_the_same_setup_as_make_run():
    makefile = (ROOT / "Makefile").read_text()

    run = re.search(r"^run: (.*)$", makefile, re.M)[1]
    doctor_rule = re.search(r"^doctor: (.*)\n\t(.*)$", makefile, re.M)

    assert doctor_rule[1] == run
    assert doctor_rule[2] == "$(PY) server.py doctor $(DOCTOR_ARGS)"


# --- the README shows the doctor's real output ---

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def readme_consoles():
    """(command, output) of each console block in the README's Setup doctor section."""
    section = (ROOT / "README.md").read_text().split("\n## Setup doctor\n")[1].split("\n## ")[0]
    return re.findall(r"```console\n\$ (.*?)\n(.*?)\n```", section, re.S)


def normalised(text):
    """The random parts: the probe's UUID and the local S3's port."""
    return re.sub(r"127\.0\.0\.1:\d+\)", "127.0.0.1:PORT)", UUID.sub("UUID", text)).rstrip("\n")


def test_readme_shows_the_doctor_passing_the_embedded_s3(tmp_path):
    command, shown = readme_consoles()[0]
    assert command == "python server.py doctor"

    result = run_server(tmp_path, "doctor")

    assert normalised(result.stdout) == normalised(shown)


def test_readme_shows_the_doctor_on_a_broken_setup(start_s3, tmp_path):
    command, shown = readme_consoles()[1]
    settings, _, program = command.partition(" python ")
    environment = dict(setting.split("=", 1) for setting in settings.split())
    s3 = start_s3(object_ownership="BucketOwnerEnforced")
    put_cors(s3, CORS_WITHOUT_ETAG.replace(b"http://app.test", b"http://127.0.0.1:8080"))
    environment |= {"AWS_ENDPOINT_URL_S3": s3.url}
    environment |= {
        "AWS_ACCESS_KEY_ID": S3_TEST_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_TEST_SECRET_KEY,
    }

    result = run_server(tmp_path, *program.split()[1:], **environment)

    assert result.returncode == 1
    assert normalised(result.stdout) == normalised(shown)


def test_the_doctor_probes_the_upload_method_the_app_uses(tmp_path):
    result = run_server(tmp_path, "doctor", UPLOAD_METHOD="put")

    assert result.returncode == 0, result.stdout
    assert "ok    Upload: A 1-byte PUT upload to uploads/doctor-probe-" in result.stdout
