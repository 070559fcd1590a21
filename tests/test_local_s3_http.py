"""The local S3 over real HTTP (LocalS3 on 127.0.0.1, a free port): the reference client
(botocore) agrees with it, parallel uploads never mix, and a client that hangs up leaves nothing.
"""

import base64
import hashlib
import http.client
import os
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import botocore.exceptions
import crc32c
import pytest
from conftest import (
    S3_TEST_ACCESS_KEY,
    S3_TEST_ORIGIN,
    S3_TEST_SECRET_KEY,
    boto3_client,
    browser_form,
    connect,
    raw_post_head,
    wait_for,
)

import local_s3
import signer

REGION = "us-east-1"


def our_form(server, key, max_bytes=10_000_000):
    credentials = signer.Credentials(S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY)
    return signer.presigned_post(
        credentials,
        bucket="uploads",
        key=key,
        region=REGION,
        endpoint=server.url,
        max_bytes=max_bytes,
    )


def md5_etag(data):
    return f'"{hashlib.md5(data).hexdigest()}"'


# --- botocore, the reference client -------------------------------------------------------------


def test_botocore_presigned_post_is_accepted(running_s3, post_form):
    post = boto3_client(running_s3).generate_presigned_post("uploads", "from/botocore.txt")
    status, headers, body = post_form(post["url"], post["fields"], b"hello botocore")

    assert (status, body) == (204, b"")
    stored = local_s3.stored_object(running_s3.config, "uploads", "from/botocore.txt")
    assert stored.read_bytes() == b"hello botocore"
    assert headers["ETag"] == md5_etag(b"hello botocore")


def test_botocore_presigned_post_with_conditions_and_filename_variable(running_s3, post_form):
    post = boto3_client(running_s3).generate_presigned_post(
        "uploads",
        "user/eric/${filename}",
        Fields={"success_action_status": "201", "Content-Type": "image/png"},
        Conditions=[
            {"success_action_status": "201"},
            ["starts-with", "$Content-Type", "image/"],
            ["content-length-range", 1, 100],
        ],
    )
    status, _, body = post_form(post["url"], post["fields"], b"\x89PNG", filename="cat.png")

    assert status == 201
    assert b"<Key>user/eric/cat.png</Key>" in body
    stored = local_s3.stored_object(running_s3.config, "uploads", "user/eric/cat.png")
    assert stored.content_type == "image/png"


def test_botocore_presigned_post_over_its_range_is_entity_too_large(running_s3, post_form):
    post = boto3_client(running_s3).generate_presigned_post(
        "uploads", "small.txt", Conditions=[["content-length-range", 1, 10]]
    )
    status, _, body = post_form(post["url"], post["fields"], b"x" * 11)

    assert status == 400
    assert b"<Code>EntityTooLarge</Code>" in body
    assert local_s3.list_objects(running_s3.config) == []


def test_botocore_presigned_get_url_works(running_s3, post_form):
    post_form(
        our_form(running_s3, "docs/a b+c.txt")["url"],
        our_form(running_s3, "docs/a b+c.txt")["fields"],
        b"readable",
    )
    url = boto3_client(running_s3).generate_presigned_url(
        "get_object", Params={"Bucket": "uploads", "Key": "docs/a b+c.txt"}, ExpiresIn=60
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"readable"
        assert response.headers["ETag"] == md5_etag(b"readable")


def test_botocore_signed_head_object_works_and_reports_missing_keys(running_s3, post_form):
    form = our_form(running_s3, "checked.bin")
    post_form(form["url"], form["fields"], b"12345")
    client = boto3_client(running_s3)

    head = client.head_object(Bucket="uploads", Key="checked.bin")
    assert head["ContentLength"] == 5
    assert head["ETag"] == md5_etag(b"12345")
    with pytest.raises(botocore.exceptions.ClientError) as missing:
        client.head_object(Bucket="uploads", Key="not-there")
    assert missing.value.response["Error"]["Code"] == "404"


def test_botocore_head_object_with_the_wrong_secret_is_forbidden(running_s3):
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        boto3_client(running_s3, secret="not-the-secret").head_object(Bucket="uploads", Key="x")
    assert refused.value.response["Error"]["Code"] == "403"


def test_botocore_get_object_reads_the_bytes(running_s3, post_form):
    form = our_form(running_s3, "read/me.txt")
    post_form(form["url"], form["fields"], b"through boto3")

    response = boto3_client(running_s3).get_object(Bucket="uploads", Key="read/me.txt")
    assert response["Body"].read() == b"through boto3"


def test_botocore_put_object_and_presigned_put_url_store_the_bytes(running_s3):
    client = boto3_client(running_s3)
    put = client.put_object(
        Bucket="uploads", Key="put/a.txt", Body=b"put by boto3", ContentType="text/plain"
    )
    url = client.generate_presigned_url(
        "put_object", Params={"Bucket": "uploads", "Key": "put/b.bin"}, ExpiresIn=60
    )
    request = urllib.request.Request(url, data=b"put by URL", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200

    assert put["ETag"] == md5_etag(b"put by boto3")
    config = running_s3.config
    assert local_s3.stored_object(config, "uploads", "put/a.txt").content_type == "text/plain"
    assert local_s3.stored_object(config, "uploads", "put/b.bin").read_bytes() == b"put by URL"


def test_botocore_put_and_get_bucket_cors_round_trip(running_s3):
    client = boto3_client(running_s3)
    rule = {
        "AllowedOrigins": ["https://app.example.test"],
        "AllowedMethods": ["POST", "GET"],
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["ETag", "Location"],
        "MaxAgeSeconds": 3000,
    }
    client.put_bucket_cors(Bucket="uploads", CORSConfiguration={"CORSRules": [rule]})

    assert client.get_bucket_cors(Bucket="uploads")["CORSRules"] == [rule]


# --- concurrency --------------------------------------------------------------------------------


def test_parallel_uploads_to_different_keys_are_all_stored_intact(running_s3, post_form):
    payloads = {f"parallel/{n}.bin": bytes([n]) * (50_000 + n) for n in range(12)}

    def upload(key):
        form = our_form(running_s3, key)
        return post_form(form["url"], form["fields"], payloads[key])[0]

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(upload, payloads)) == [201] * len(payloads)
    for key, data in payloads.items():
        stored = local_s3.stored_object(running_s3.config, "uploads", key)
        assert stored.read_bytes() == data
        assert stored.etag == md5_etag(data)
    assert local_s3.leftover_files(running_s3.config) == []


def test_parallel_uploads_to_the_same_key_leave_exactly_one_whole_upload(running_s3, post_form):
    versions = [bytes([n]) * 300_000 for n in range(10)]
    form = our_form(running_s3, "contended.bin")

    def upload(data):
        return post_form(form["url"], form["fields"], data)[0]

    with ThreadPoolExecutor(max_workers=10) as pool:
        assert list(pool.map(upload, versions)) == [201] * len(versions)
    stored = local_s3.stored_object(running_s3.config, "uploads", "contended.bin")
    final = stored.read_bytes()
    assert final in versions
    assert stored.etag == md5_etag(final)
    assert local_s3.leftover_files(running_s3.config) == []
    assert len(local_s3.list_objects(running_s3.config)) == 1


def test_reads_during_rewrites_always_see_one_whole_version(running_s3, post_form):
    versions = [bytes([n]) * 200_000 for n in range(6)]
    form = our_form(running_s3, "busy.bin")
    post_form(form["url"], form["fields"], versions[0])
    credentials = signer.Credentials(S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY)
    object_url = signer.object_url("uploads", "busy.bin", REGION, running_s3.url)

    def read(_):
        url = signer.presign_url(credentials, "GET", object_url, REGION)
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()

    with ThreadPoolExecutor(max_workers=4) as pool:
        writes = pool.map(lambda data: post_form(form["url"], form["fields"], data), versions)
        reads = list(pool.map(read, range(12)))
        list(writes)
    assert all(body in versions for body in reads)


# --- a client that hangs up, or sends too much -------------------------------------------------


def test_client_disconnecting_mid_upload_leaves_no_object_and_no_temporary_file(
    running_s3, post_form
):
    """The upload is under way (its temporary file exists) when the client hangs up; then the
    temporary file goes, no object appears, and the server stores the next upload."""
    form = our_form(running_s3, "abandoned.bin")
    content_type, body = browser_form(form["fields"], b"z" * 2_000_000, "a")
    with connect(running_s3.url) as connection:
        connection.sendall(
            raw_post_head(running_s3.url, content_type, len(body)) + body[:1_000_000]
        )
        wait_for(lambda: local_s3.leftover_files(running_s3.config), "the upload began")
    wait_for(lambda: not local_s3.leftover_files(running_s3.config), "the upload discarded")

    assert local_s3.list_objects(running_s3.config) == []
    status, _, _ = post_form(form["url"], form["fields"], b"still serving")
    assert status == 201


def test_upload_over_its_maximum_is_answered_while_the_client_is_still_sending(
    running_s3,
):
    """The body streams to the app: at the policy's maximum the answer goes out at once, and
    then the connection is closed, as S3 closes it after EntityTooLarge."""
    form = our_form(running_s3, "too/big.bin", max_bytes=1_000_000)
    content_type, body = browser_form(form["fields"], b"z" * 20_000_000, "a")
    head = raw_post_head(running_s3.url, content_type, len(body), f"Origin: {S3_TEST_ORIGIN}")
    with connect(running_s3.url) as connection:
        connection.sendall(head)
        sent = 0
        while sent < len(body) and not select.select([connection], [], [], 0)[0]:
            connection.sendall(body[sent : sent + 65536])
            sent += 65536
            time.sleep(0.001)
        reply = http.client.HTTPResponse(connection)
        reply.begin()
        answer = reply.read()

    assert sent < len(body)  # the answer came while the client was still sending
    assert reply.status == 400 and b"<Code>EntityTooLarge</Code>" in answer
    assert b"<MaxSizeAllowed>1000000</MaxSizeAllowed>" in answer
    assert reply.getheader("Access-Control-Allow-Origin") == S3_TEST_ORIGIN
    assert reply.getheader("Connection") == "close"
    assert local_s3.leftover_files(running_s3.config) == []
    assert local_s3.list_objects(running_s3.config) == []


def base64_digest(algorithm, content):
    if algorithm == "crc32c":
        return base64.b64encode(crc32c.crc32c(content).to_bytes(4, "big")).decode()
    return base64.b64encode(hashlib.new(algorithm, content).digest()).decode()


@pytest.mark.parametrize("algorithm", ["crc32c", "sha256"])
def test_botocore_form_with_a_checksum_is_verified_over_the_streamed_file(
    running_s3, post_form, algorithm
):
    """3 MB through the real server, the checksum computed while the file streams to disk."""
    content = os.urandom(3 * 1024**2 + 7)
    name = f"x-amz-checksum-{algorithm}"
    answers = {}
    for label, value in [("other", base64_digest(algorithm, b"other")),
                         ("right", base64_digest(algorithm, content))]:  # fmt: skip
        post = boto3_client(running_s3).generate_presigned_post(
            "uploads", "summed.bin", Fields={name: value}, Conditions=[{name: value}]
        )
        status, _, body = post_form(post["url"], post["fields"], content)
        answers[label] = (status, body)
        if label == "other":
            assert local_s3.list_objects(running_s3.config) == []

    assert answers["other"][0] == 400 and b"<Code>BadDigest</Code>" in answers["other"][1]
    assert answers["right"] == (204, b"")
    stored = local_s3.stored_object(running_s3.config, "uploads", "summed.bin")
    assert stored.checksum == {"algorithm": algorithm, "value": base64_digest(algorithm, content)}
    assert local_s3.leftover_files(running_s3.config) == []


def test_upload_without_content_length_is_missing_content_length_as_on_s3(running_s3):
    """S3 takes an upload's size from Content-Length; a POST that sends none is 411."""
    with connect(running_s3.url) as connection:
        connection.sendall(
            b"POST /uploads/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n"
        )
        reply = http.client.HTTPResponse(connection)
        reply.begin()
        answer = reply.read()

    assert reply.status == 411 and b"<Code>MissingContentLength</Code>" in answer


def test_body_over_the_server_limit_is_refused_before_the_app(tmp_path):
    """waitress refuses a declared Content-Length over the limit without reading the body."""
    config = local_s3.S3Config(
        data_dir=tmp_path / "data", buckets=("uploads",), credentials={}, max_body_bytes=1000
    )
    with local_s3.LocalS3(config) as server, connect(server.url) as client:
        client.sendall(
            b"POST /uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n"
        )
        status_line = client.makefile("rb").readline()
    assert status_line.split()[1] == b"413"
    assert local_s3.leftover_files(config) == []


def open_sockets():
    return sum(os.readlink(f"/proc/self/fd/{fd}").startswith("socket:") for fd in fd_names())


def fd_names():
    return [fd for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")]


def test_server_stops_and_leaves_no_thread_socket_or_port(tmp_path):
    threads_before, sockets_before = set(threading.enumerate()), open_sockets()
    config = local_s3.S3Config(data_dir=tmp_path / "data", buckets=("uploads",), credentials={})
    server = local_s3.LocalS3(config).start()
    address = urlsplit(server.url)
    with connect(server.url) as connection:  # a connection the server is still serving at stop
        connection.sendall(raw_post_head(server.url, "multipart/form-data; boundary=x", 100))
        server.stop()

    assert set(threading.enumerate()) <= threads_before
    assert open_sockets() <= sockets_before
    with pytest.raises(OSError):
        socket.create_connection((address.hostname, address.port), timeout=1).close()
