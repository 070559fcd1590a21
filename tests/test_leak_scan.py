"""The secret scanner itself: it finds a secret wherever it hides, and it really sees the suite.

A scanner that sees nothing passes everything, so these tests check both halves: a private
LeakScanner finds planted secrets (split across chunks, percent-encoded, in a header, in a log
record), and the session's scanner counts the responses and log records this test produces.
"""

import logging
import urllib.error
import urllib.request
from pathlib import Path

import leak_scan
import pytest
import webtest
from conftest import S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY, app_config

import local_s3
import server
import signer

PLANTED = "planted-secret/0123456789abcdef"


def leaky_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Debug", environ["leak"])])
    return [chunk.encode() for chunk in environ["chunks"]]


def scanned_response(scanner: leak_scan.LeakScanner, **environ) -> None:
    app = leak_scan.ScannedApp(leaky_app, scanner, "leaky")
    webtest.TestApp(app, extra_environ=environ, lint=False).get("/")


def test_scanner_finds_a_secret_split_across_two_body_chunks():
    scanner = leak_scan.LeakScanner()
    scanner.add_secret(PLANTED)
    scanned_response(scanner, leak="-", chunks=["before " + PLANTED[:10], PLANTED[10:] + " after"])
    assert scanner.leaks == ["leaky GET / (body): contains a secret (plan...)"]


def test_scanner_finds_a_percent_encoded_secret_in_a_header():
    scanner = leak_scan.LeakScanner()
    scanner.add_secret(PLANTED)
    scanned_response(scanner, leak="x=planted-secret%2F0123456789abcdef", chunks=["fine"])
    assert scanner.leaks == ["leaky GET / (headers): contains a secret (plan...)"]


def test_scanner_finds_a_secret_in_a_log_record_with_its_traceback():
    scanner = leak_scan.LeakScanner()
    scanner.add_secret(PLANTED)
    logger = logging.getLogger("leak-scan-test")
    handler = leak_scan.ScanningHandler(scanner)
    logger.addHandler(handler)
    try:
        raise ValueError(PLANTED)
    except ValueError:
        logger.exception("signing failed")
    finally:
        logger.removeHandler(handler)
    assert scanner.leaks == ["log record of leak-scan-test: contains a secret (plan...)"]


def test_scanner_finds_a_secret_registered_after_the_response():
    scanner = leak_scan.LeakScanner()
    scanned_response(scanner, leak="-", chunks=[f"early {PLANTED}"])
    scanner.add_secret(PLANTED)
    assert scanner.leaks == ["leaky GET / (body): contains a secret (plan...)"]


def test_session_scanner_sees_webtest_real_http_and_log_records(tmp_path: Path):
    before = dict(leak_scan.SCANNER.counts)
    credentials = signer.Credentials(S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY)
    config = app_config(credentials=credentials, data_dir=tmp_path)
    assert isinstance(server.create_app(config), leak_scan.ScannedApp)
    webtest.TestApp(server.create_app(config)).get("/healthz")
    s3_config = local_s3.S3Config(
        tmp_path / "s3", ("uploads",), {S3_TEST_ACCESS_KEY: S3_TEST_SECRET_KEY}
    )
    with local_s3.LocalS3(s3_config) as s3, pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(s3.url + "/", timeout=5)
    refused.value.close()
    assert refused.value.code == 405
    logging.getLogger("server").info("an ordinary line")
    after = leak_scan.SCANNER.counts
    assert after["responses"] >= before["responses"] + 2
    assert after["log records"] >= before["log records"] + 1
    assert S3_TEST_SECRET_KEY.encode() in leak_scan.SCANNER.needles
