"""The local S3 against malformed bodies, disconnects, crashes, a full disk and load.

Whatever arrives, the local S3 answers S3's XML (never a 500 for bad input), writes nothing
outside its data folder, and keeps only whole objects: a rejected, interrupted or killed upload
leaves no object and no temporary file, and a valid one is stored byte for byte. `make stress`
runs the same scenarios longer and bigger (tests marked `stress`).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import leak_scan
import pytest
from conftest import (
    S3_TEST_ACCESS_KEY,
    S3_TEST_ORIGIN,
    S3_TEST_SECRET_KEY,
    browser_form,
    connect,
    raw_post_head,
    send_form,
    wait_for,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import local_s3
import signer

HERE = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
KEY = "fuzz/object.bin"
CONTENT = bytes(range(256)) * 4
BOUNDARY = "ReliabilityBoundary7MA4YWxk"
FORM_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
S3_STATUSES = (200, 201, 204, 400, 403, 411, 412)
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


# ---- forms, bodies and what must be true after every request -----------------------------------


def signed_form(credentials, now, key=KEY, endpoint="http://localhost", max_bytes=10_000):
    return signer.presigned_post(
        credentials, bucket="uploads", key=key, region=REGION, endpoint=endpoint,
        max_bytes=max_bytes, now=now,
    )  # fmt: skip


def form_body(fields: dict[str, str], content: bytes) -> tuple[bytes, int]:
    """A browser's body for the form and file, and where the file's bytes start in it."""
    _, body = browser_form(fields, content, "object.bin", BOUNDARY)
    return body, len(body) - len(content) - len(f"\r\n--{BOUNDARY}--\r\n")


def snapshot(config: local_s3.S3Config) -> dict[str, str]:
    return {stored.key: stored.etag for stored in local_s3.list_objects(config)}


def assert_only_whole_objects(config: local_s3.S3Config) -> None:
    """Every stored object's bytes match its size and ETag; no temporary file or stray blob."""
    for stored in local_s3.list_objects(config):
        data = stored.read_bytes()
        assert (len(data), f'"{hashlib.md5(data).hexdigest()}"') == (stored.size, stored.etag)
    assert local_s3.leftover_files(config) == []


def assert_nothing_outside(root: Path, data_dir: Path) -> None:
    """Nothing but the data folder under the test's folder, and only S3's own folders in it."""
    assert sorted(root.iterdir()) == [data_dir]
    assert {".tmp", "blobs", "objects"} <= {path.name for path in data_dir.iterdir()}
    assert all(path.is_dir() for path in data_dir.iterdir())


def assert_s3_error(status: int, body: bytes) -> str:
    assert status in S3_STATUSES and status >= 400, body[:300]
    error = ET.fromstring(body)
    assert error.tag == "Error" and error.findtext("Message")
    return error.findtext("Code")


# ---- fuzzing: malformed and mutated multipart bodies (WebTest) ---------------------------------

CONTENT_TYPES = [
    FORM_TYPE,
    f'multipart/form-data; boundary="{BOUNDARY}"',
    f"multipart/form-data; charset=utf-8; boundary={BOUNDARY}",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "multipart/form-data; boundary=other",
    "multipart/form-data; boundary=" + "b" * 300,
    "multipart/mixed; boundary=" + BOUNDARY,
    "application/x-www-form-urlencoded",
    "",
]
RENAMES = [
    (b'name="key"', b'name="key[]"'),
    (b'name="key"', b'name="a/../key"'),
    (b'name="file"', b'name="file[0]"'),
    (b'name="file"', b'name="FILE"'),
    (b'name="policy"', b'name="policy"; name="key"'),
    (b'name="x-amz-signature"', b'name="x-amz-meta-a/b"'),
    (b'filename="object.bin"', b'filename="../../../etc/passwd"'),
    (b'filename="object.bin"', b'filename="${filename}"'),
    (b"form-data;", b"form-data ;"),
]


@st.composite
def mutated(draw, body: bytes, content_span: tuple[int, int]) -> tuple[bytes, bool]:
    """A body changed in one hostile way, and whether the change reached the file's bytes."""
    kind = draw(st.sampled_from(list(MUTATIONS)))
    at = draw(st.integers(0, len(body)))
    new, start, end = MUTATIONS[kind](draw, body, at)
    first, last = content_span
    # The file part's own headers count too: a CRLF inserted among them ends them early, and
    # the header lines after it become the file's first bytes.
    first = body.rindex(f"--{BOUNDARY}".encode(), 0, first)
    return new, start < last and end > first


def truncate(draw, body, at):
    return body[:at], at, len(body)


def delete(draw, body, at):
    length = draw(st.integers(1, 64))
    return body[:at] + body[at + length :], at, at + length


def insert(draw, body, at):
    junk = draw(st.binary(min_size=1, max_size=64) | st.sampled_from([b"\r\n", b"--", b"\r\n--"]))
    return body[:at] + junk + body[at:], at, at + 1


def crlf_to_lf(draw, body, at):
    spots = [match.start() for match in re.finditer(b"\r\n", body)]
    spot = draw(st.sampled_from(spots))
    return body[:spot] + body[spot + 1 :], spot, spot + 2


def every_crlf_to_lf(draw, body, at):
    return body.replace(b"\r\n", b"\n"), 0, len(body)


def duplicate_part(draw, body, at):
    parts = body.split(f"--{BOUNDARY}\r\n".encode())
    index = draw(st.integers(1, len(parts) - 1))
    copy = f"--{BOUNDARY}\r\n".encode() + parts[index]
    offset = body.index(copy)
    return body[:offset] + copy + body[offset:], offset, offset + 1


def huge_header(draw, body, at):
    size = draw(st.sampled_from([100, 5_000, 70_000]))
    spot = body.index(b"Content-Disposition", draw(st.integers(0, len(body) // 2)) // 2)
    pad = b"X-Padding: " + b"a" * size + b"\r\n"
    return body[:spot] + pad + body[spot:], spot, spot + 1


def rename(draw, body, at):
    old, new = draw(st.sampled_from(RENAMES))
    spot = body.index(old)
    return body.replace(old, new, 1), spot, spot + len(old)


def flip_byte(draw, body, at):
    at = min(at, len(body) - 1)
    return body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :], at, at + 1


MUTATIONS = {
    "truncate": truncate,
    "delete": delete,
    "insert": insert,
    "crlf-to-lf": crlf_to_lf,
    "every-crlf-to-lf": every_crlf_to_lf,
    "duplicate-part": duplicate_part,
    "huge-header": huge_header,
    "rename": rename,
    "flip-byte": flip_byte,
}
TOKENS = [
    f"--{BOUNDARY}\r\n".encode(),
    f"--{BOUNDARY}--\r\n".encode(),
    b'Content-Disposition: form-data; name="file"; filename="f"\r\n',
    b'Content-Disposition: form-data; name="key"\r\n',
    b"Content-Type: text/plain\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"uploads/x",
    b"\x00",
]
token_soup = st.lists(st.sampled_from(TOKENS) | st.binary(max_size=20), max_size=30).map(b"".join)


def post_raw(s3_app, body: bytes, content_type: str):
    response = s3_app.request(
        "/uploads/", method="POST", body=body, headers={"Content-Type": content_type}, status="*"
    )
    return response.status_int, response.body


def check_after(config, root, before, status, body, stored_content, touched):
    """A refused request changed nothing; an accepted one stored exactly the file it carried."""
    assert_nothing_outside(root, config.data_dir)
    assert_only_whole_objects(config)
    if status >= 300:
        assert_s3_error(status, body)
        assert snapshot(config) == before
        return
    assert status in (200, 201, 204)
    stored = local_s3.stored_object(config, "uploads", KEY)
    data = stored.read_bytes()
    assert data == stored_content if not touched else data in stored_content


@FUZZ
@given(data=st.data())
def test_mutated_signed_forms_are_refused_cleanly_or_stored_exactly(
    s3_app, s3_config, s3_credentials, s3_now, tmp_path, data
):
    body, start = form_body(signed_form(s3_credentials, s3_now)["fields"], CONTENT)
    new_body, touched = data.draw(mutated(body, (start, start + len(CONTENT))))
    content_type = data.draw(st.sampled_from(CONTENT_TYPES[:3]) | st.sampled_from(CONTENT_TYPES))
    before = snapshot(s3_config)
    status, answer = post_raw(s3_app, new_body, content_type)
    check_after(
        s3_config, tmp_path, before, status, answer, new_body if touched else CONTENT, touched
    )


@FUZZ
@given(body=token_soup | st.binary(max_size=400), content_type=st.sampled_from(CONTENT_TYPES))
def test_random_bodies_are_refused_with_s3_errors(s3_app, s3_config, tmp_path, body, content_type):
    status, answer = post_raw(s3_app, body, content_type)
    assert_s3_error(status, answer)
    assert_nothing_outside(tmp_path, s3_config.data_dir)
    assert local_s3.list_objects(s3_config) == [] and local_s3.leftover_files(s3_config) == []


def test_an_unmutated_form_is_stored_exactly(s3_app, s3_config, s3_credentials, s3_now):
    body, _ = form_body(signed_form(s3_credentials, s3_now)["fields"], CONTENT)
    assert post_raw(s3_app, body, CONTENT_TYPES[0])[0] == 201
    assert local_s3.stored_object(s3_config, "uploads", KEY).read_bytes() == CONTENT


@pytest.fixture(scope="module")
def shared_s3(tmp_path_factory: pytest.TempPathFactory):
    """One local S3 (WebTest, frozen clock) for thousands of stress examples."""
    import webtest

    root = tmp_path_factory.mktemp("fuzz")
    config = local_s3.S3Config(
        data_dir=root / "data", buckets=("uploads",),
        credentials={S3_TEST_ACCESS_KEY: S3_TEST_SECRET_KEY}, clock=lambda: NOW,
    )  # fmt: skip
    app = webtest.TestApp(local_s3.create_app(config), extra_environ={"HTTP_HOST": "localhost"})
    return root, config, app


STRESS = settings(max_examples=5_000, deadline=None)


@pytest.mark.stress
@STRESS
@given(data=st.data())
def test_stress_mutated_forms_over_many_examples(shared_s3, data):
    root, config, app = shared_s3
    credentials = signer.Credentials(S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY)
    body, start = form_body(signed_form(credentials, NOW)["fields"], CONTENT)
    new_body, touched = data.draw(mutated(body, (start, start + len(CONTENT))))
    before = snapshot(config)
    status, answer = post_raw(app, new_body, data.draw(st.sampled_from(CONTENT_TYPES)))
    check_after(config, root, before, status, answer, new_body if touched else CONTENT, touched)


@pytest.mark.stress
@STRESS
@given(body=token_soup | st.binary(max_size=2_000), content_type=st.sampled_from(CONTENT_TYPES))
def test_stress_random_bodies(shared_s3, body, content_type):
    root, config, app = shared_s3
    before = snapshot(config)
    status, answer = post_raw(app, body, content_type)
    assert_s3_error(status, answer)
    assert_nothing_outside(root, config.data_dir)
    assert snapshot(config) == before and local_s3.leftover_files(config) == []


# ---- real HTTP helpers -------------------------------------------------------------------------


def real_form(url: str, key: str, credentials=None, max_bytes=100 * 1024**2) -> dict[str, str]:
    credentials = credentials or signer.Credentials(S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY)
    return signed_form(credentials, None, key=key, endpoint=url, max_bytes=max_bytes)["fields"]


def request_head(url: str, length: int) -> bytes:
    """This file's upload head by hand: a form with BOUNDARY, the connection closed after it."""
    return raw_post_head(url, FORM_TYPE, length, "Connection: close")


def post_key(url: str, key: str, content: bytes, credentials=None) -> tuple[int, bytes]:
    """Sign a form for `key` and upload `content` with it over HTTP: (status, body)."""
    fields = real_form(url, key, credentials)
    status, _, body = send_form(f"{url}/uploads/", fields, content, "object.bin")
    return status, body


def read_answer(connection: socket.socket) -> tuple[int, bytes]:
    reply = http.client.HTTPResponse(connection)
    reply.begin()
    return reply.status, reply.read()


def settle(config: local_s3.S3Config, timeout: float = 5.0) -> None:
    """Wait until no upload is in flight (no temporary file), or give up and let asserts say."""
    deadline = time.monotonic() + timeout
    while local_s3.leftover_files(config) and time.monotonic() < deadline:
        time.sleep(0.02)


def deleted_open_files() -> int:
    """This process's open file descriptors on deleted files: spooled bodies not yet closed."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").endswith("(deleted)")
    return count


# ---- faults: clients that hang up --------------------------------------------------------------


def held_connections(url: str) -> int:
    """TCP connections to url's port that the server has not closed (queued or served), from
    /proc/net/tcp: its side SYN_RECV, ESTABLISHED or CLOSE_WAIT (the client hung up already)."""
    port = f":{urlsplit(url).port:04X}"
    rows = [row.split() for row in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return sum(row[1].endswith(port) and row[3] in ("01", "03", "08") for row in rows)


def hang_up(connection: socket.socket, style: str) -> None:
    if style == "reset":  # RST instead of FIN: SO_LINGER with a zero timeout
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif style == "half-close":
        connection.shutdown(socket.SHUT_WR)
    connection.close()


def disconnect_rounds(server: local_s3.LocalS3, rounds: int, size: int, seed: int) -> dict:
    """`rounds` uploads cut at random points (headers, fields, file, closing boundary)."""
    chooser = random.Random(seed)
    fields = real_form(server.url, "abandoned.bin")
    body, start = form_body(fields, os.urandom(size))
    request = request_head(server.url, len(body)) + body
    head = len(request) - len(body)
    landmarks = [head // 2, head + start // 2, head + start + size // 2, len(request) - 5]
    outcome = {"tried": 0, "objects": 0, "leftovers": 0}
    for round_number in range(rounds):
        cut = chooser.choice(landmarks) + chooser.randint(-200, 200)
        cut = max(1, min(cut, len(request) - 1))
        with connect(server.url) as connection:
            connection.sendall(request[:cut])
            hang_up(connection, chooser.choice(["close", "reset", "half-close"]))
        if round_number % 10 == 9:
            wait_for(lambda: not held_connections(server.url), "the server let go of them")
        outcome["tried"] += 1
    wait_for(lambda: not held_connections(server.url), "the server let go of every connection")
    outcome["objects"] = len(local_s3.list_objects(server.config))
    outcome["leftovers"] = len(local_s3.leftover_files(server.config))
    return outcome


def test_fifty_clients_hanging_up_mid_upload_leave_no_object_and_no_temporary_file(running_s3):
    spooled_before = deleted_open_files()
    outcome = disconnect_rounds(running_s3, rounds=50, size=1_000_000, seed=6)  # spooled to disk
    assert outcome == {"tried": 50, "objects": 0, "leftovers": 0}
    assert deleted_open_files() <= spooled_before
    content = b"still serving"
    body, _ = form_body(real_form(running_s3.url, "after.bin"), content)
    with connect(running_s3.url) as connection:
        connection.sendall(request_head(running_s3.url, len(body)) + body)
        assert read_answer(connection)[0] == 201


def test_client_hanging_up_after_the_whole_body_still_gets_a_whole_object(running_s3):
    """Once the last byte has arrived the upload is complete, as on S3, read answer or not."""
    uploads = {f"sent-{n}.bin": os.urandom(200_000 + n) for n in range(10)}
    for key, content in uploads.items():
        body, _ = form_body(real_form(running_s3.url, key), content)
        with connect(running_s3.url) as connection:
            connection.sendall(request_head(running_s3.url, len(body)) + body)
            hang_up(connection, "close")  # a reset could discard bytes the server had not read
    wait_for(
        lambda: len(local_s3.list_objects(running_s3.config)) == len(uploads),
        "every upload stored",
        timeout=10,
    )
    settle(running_s3.config)
    for key, content in uploads.items():
        assert local_s3.stored_object(running_s3.config, "uploads", key).read_bytes() == content
    assert_only_whole_objects(running_s3.config)


@pytest.mark.stress
def test_stress_500_clients_hanging_up_mid_upload(running_s3):
    outcome = disconnect_rounds(running_s3, rounds=500, size=3_000_000, seed=60)
    assert outcome == {"tried": 500, "objects": 0, "leftovers": 0}


# ---- streaming: the app reads the body while it arrives ----------------------------------------


@pytest.fixture
def slow_disk(monkeypatch):
    """Uploads are written at about 25 MB/s, so a fast client runs ahead of the disk."""
    write = local_s3.storage.Upload.write

    def slow_write(self, chunk):
        time.sleep(len(chunk) / 25_000_000)
        write(self, chunk)

    monkeypatch.setattr(local_s3.storage.Upload, "write", slow_write)


def written_so_far(config: local_s3.S3Config) -> int:
    """Bytes of the uploads in flight that are already in their temporary files."""
    written = 0
    for path in local_s3.leftover_files(config):
        with contextlib.suppress(FileNotFoundError):  # an upload may end meanwhile
            written += path.stat().st_size
    return written


def hashing_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "local-s3-md5"]


def test_the_file_is_written_while_it_arrives(running_s3):
    """The first half of the file reaches the disk before the client sends the second half."""
    content = os.urandom(8 * 1024**2)
    body, start = form_body(real_form(running_s3.url, "halves.bin"), content)
    middle = start + len(content) // 2
    with connect(running_s3.url, timeout=30) as connection:
        connection.sendall(request_head(running_s3.url, len(body)) + body[:middle])
        wait_for(lambda: written_so_far(running_s3.config) >= len(content) // 4, "a write")
        connection.sendall(body[middle:])
        assert read_answer(connection)[0] == 201
    stored = local_s3.stored_object(running_s3.config, "uploads", "halves.bin")
    assert stored.read_bytes() == content


def test_a_fast_client_and_a_slow_disk_keep_a_few_mb_in_memory(running_s3, slow_disk):
    """The server reads the socket only as fast as it writes the file, so the body never piles
    up in memory (the client waits in TCP instead); another request is answered meanwhile."""
    tracemalloc.start()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            upload = pool.submit(streamed_upload, running_s3.url, "slow.bin", 32 * 1024**2, 3)
            wait_for(lambda: written_so_far(running_s3.config) > 0, "the upload began")
            connection = http.client.HTTPConnection(urlsplit(running_s3.url).netloc, timeout=10)
            connection.request("GET", "/uploads/other.bin")
            assert connection.getresponse().status == 403  # unsigned: AccessDenied, as on S3
            connection.close()
            answered_during_upload = not upload.done()
            sent, etag, status = upload.result(timeout=120)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert (status, etag) == (201, sent)
    assert answered_during_upload
    assert peak < 12 * 1024**2
    assert local_s3.leftover_files(running_s3.config) == []


@pytest.mark.parametrize("style", ["close", "reset"])
def test_a_client_hanging_up_while_the_app_reads_leaves_nothing_and_no_thread(
    start_s3, slow_disk, style
):
    """Cut mid-file: the upload is discarded, its hashing thread ends, and the server's only
    worker is free again to store the next upload."""
    s3 = start_s3(threads=1)
    body, _ = form_body(real_form(s3.url, "cut.bin"), os.urandom(30 * 1024**2))
    with connect(s3.url) as connection:
        connection.sendall(request_head(s3.url, len(body)) + body[: 10 * 1024**2])
        wait_for(lambda: written_so_far(s3.config) > 0, "the app is writing the file")
        hang_up(connection, style)
    wait_for(lambda: not local_s3.leftover_files(s3.config), "the temporary file removed")
    wait_for(lambda: not hashing_threads(), "the hashing thread ended")

    assert local_s3.list_objects(s3.config) == []
    assert post_key(s3.url, "next.bin", b"next")[0] == 201


def test_request_headers_over_s3s_8_kb_are_refused_before_the_app(running_s3):
    head = request_head(running_s3.url, 10).replace(b"\r\n\r\n", b"\r\nX-Pad: ")
    with connect(running_s3.url) as connection:
        connection.sendall(head + b"a" * 9000 + b"\r\n\r\n" + b"x" * 10)
        status_line = connection.makefile("rb").readline()
    assert status_line.split()[1] == b"413"
    assert local_s3.leftover_files(running_s3.config) == []


# ---- bodies checked before they are stored ------------------------------------------------------

LARGE_DECLARED = 300 * 1024**2  # what a client claims it will send; it sends a few MB at most


class DiskWatch:
    """The most bytes the uploads in flight ever had on disk while the block ran, sampled."""

    def __init__(self, config: local_s3.S3Config) -> None:
        self.config, self.peak, self.running = config, 0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, written_so_far(self.config))
            time.sleep(0.001)

    def __enter__(self) -> DiskWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.running = False
        self.thread.join()


def send_until_answered(connection: socket.socket, data: bytes, limit: int) -> int:
    """Sends `data`, then zeros, until the server answers (or `limit` bytes): bytes sent."""
    sent = 0
    connection.setblocking(False)
    try:
        while sent < limit and not select.select([connection], [], [], 0)[0]:
            with contextlib.suppress(BlockingIOError):
                sent += connection.send(data[sent:] or b"\0" * 65536)
            time.sleep(0.0005)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed while we were sending
    connection.setblocking(True)
    return sent


def test_a_form_refused_before_its_file_writes_nothing_and_is_answered_at_once(running_s3):
    """A bad signature with 300 MB announced: refused when the file part begins, before any of
    its bytes is stored, while the client still has almost everything to send."""
    fields = {**real_form(running_s3.url, "bad.bin"), "x-amz-signature": "0" * 64}
    body, start = form_body(fields, b"")
    head = raw_post_head(running_s3.url, FORM_TYPE, len(body) + LARGE_DECLARED)
    with DiskWatch(running_s3.config) as disk, connect(running_s3.url) as connection:
        sent = send_until_answered(connection, head + body[:start], 20 * 1024**2)
        status, answer = read_answer(connection)

    assert (status, ET.fromstring(answer).findtext("Code")) == (403, "SignatureDoesNotMatch")
    assert sent < 20 * 1024**2
    assert disk.peak == 0
    assert local_s3.leftover_files(running_s3.config) == []


def test_an_upload_over_its_policy_never_has_more_than_the_maximum_on_disk(running_s3):
    maximum = 1024**2
    fields = real_form(running_s3.url, "big.bin", max_bytes=maximum)
    body, start = form_body(fields, b"")
    head = raw_post_head(running_s3.url, FORM_TYPE, len(body) + LARGE_DECLARED)
    with DiskWatch(running_s3.config) as disk, connect(running_s3.url) as connection:
        sent = send_until_answered(connection, head + body[:start], 64 * 1024**2)
        status, answer = read_answer(connection)

    assert (status, ET.fromstring(answer).findtext("Code")) == (400, "EntityTooLarge")
    assert sent < 64 * 1024**2
    assert disk.peak <= maximum
    assert local_s3.leftover_files(running_s3.config) == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "OPTIONS"])
def test_a_bodyless_request_with_a_body_is_refused_unread(running_s3, method):
    """S3's UnexpectedContent ("This request does not support content"), answered before the
    announced 300 MB arrive."""
    head = (f"{method} /uploads/a HTTP/1.1\r\nHost: x\r\nOrigin: {S3_TEST_ORIGIN}\r\n"
            "Access-Control-Request-Method: GET\r\n"
            f"Content-Length: {LARGE_DECLARED}\r\n\r\n")  # fmt: skip
    with connect(running_s3.url) as connection:
        sent = send_until_answered(connection, head.encode(), 20 * 1024**2)
        reply = http.client.HTTPResponse(connection, method=method)
        reply.begin()
        answer = reply.read()

    assert reply.status == 400
    assert sent < 20 * 1024**2
    if method != "HEAD":
        assert ET.fromstring(answer).findtext("Code") == "UnexpectedContent"


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/uploads/"), ("PUT", "/uploads/a"), ("GET", "/uploads/a")]
)
def test_a_chunked_body_is_not_implemented_and_refused_unread(running_s3, method, path):
    """S3 answers Transfer-Encoding: chunked with 501 NotImplemented naming the header,
    whatever the request: nothing of the body is read or stored."""
    head = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: {FORM_TYPE}\r\n\r\n")  # fmt: skip
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    with DiskWatch(running_s3.config) as disk, connect(running_s3.url) as connection:
        sent = send_until_answered(connection, head.encode() + chunk * 300, 20 * 1024**2)
        status, answer = read_answer(connection)

    error = ET.fromstring(answer)
    assert (status, error.findtext("Code"), error.findtext("Header")) == (
        501, "NotImplemented", "Transfer-Encoding"
    )  # fmt: skip
    assert sent < 20 * 1024**2
    assert disk.peak == 0
    assert local_s3.leftover_files(running_s3.config) == []


# ---- slow clients (slowloris): headers a byte at a time, a body trickling in -------------------


def os_threads() -> int:
    """This process's threads as the kernel counts them (every thread, Python's or not)."""
    return len(os.listdir("/proc/self/task"))


def slow_clients(url: str, count: int) -> list[socket.socket]:
    """`count` connections that have begun a request and stall: half mid-headers, half with the
    headers sent and a form's first bytes of a 100 KB body."""
    started = []
    for number in range(count):
        connection = connect(url)
        if number % 2:
            connection.sendall(b"GET /uploads/a HTTP/1.1\r\nHost: slow\r\nX-Slow: a")
        else:
            connection.sendall(request_head(url, 100_000) + f"--{BOUNDARY}\r\n".encode())
        started.append(connection)
    return started


def test_150_slow_clients_neither_lock_others_out_nor_add_threads(start_s3):
    """The local S3 as server.py runs it (its default pool). The others' requests get their
    answers within a 5 s client timeout, and the 150 connections start no thread."""
    s3 = start_s3(threads=local_s3.serving.THREADS)
    threads_before = (threading.active_count(), os_threads())
    with contextlib.ExitStack() as stack:
        for connection in slow_clients(s3.url, 150):
            stack.callback(connection.close)
        threads_during = (threading.active_count(), os_threads())
        connection = http.client.HTTPConnection(urlsplit(s3.url).netloc, timeout=5)
        connection.request("GET", "/uploads/missing")
        status = connection.getresponse().status
        connection.close()
        upload = post_key(s3.url, "during-slowloris.bin", b"still served")

    assert status == 403
    assert upload[0] == 201
    assert threads_during == threads_before


# ---- faults: the local S3 killed with SIGKILL mid-upload, then restarted -----------------------


class S3Process:
    """`python -m local_s3` on a free port and a data folder, as a user runs it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        command = [sys.executable, "-m", "local_s3", "--port", "0", "--data"]
        self.process = subprocess.Popen(
            [*command, str(data_dir), "--bucket", "uploads"],
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        banner = ""
        while "Secret access key" not in banner and self.process.poll() is None:
            banner += self.process.stdout.readline()
        self.url = re.search(r"Local S3 at (\S+),", banner)[1]
        self.removed = int((re.search(r"removed (\d+) leftover files", banner) or [0, 0])[1])
        access_key = re.search(r"Access key id: (\S+)", banner)[1]
        secret = re.search(r"aws_secret_access_key = (\S+)", (data_dir / "credentials").read_text())
        leak_scan.add_secret(secret[1])
        self.credentials = signer.Credentials(access_key, secret[1])
        leak_scan.scan_text("python -m local_s3 banner", banner)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        output = self.process.communicate(timeout=10)[0]
        leak_scan.scan_text("python -m local_s3 output", output)

    def read(self, key: str) -> bytes | None:
        url = signer.presign_url(
            self.credentials, "GET", signer.object_url("uploads", key, REGION, self.url), REGION
        )
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.netloc, timeout=30)
        connection.request("GET", f"{parts.path}?{parts.query}")
        reply = connection.getresponse()
        body = reply.read()
        connection.close()
        return body if reply.status == 200 else None


def upload_then_kill(s3: S3Process, key: str, content: bytes, fraction: float, pause: float):
    """Send `fraction` of the request, wait `pause` seconds, SIGKILL the server; return the
    status it answered before dying, if it did."""
    fields = real_form(s3.url, key, s3.credentials)
    body, _ = form_body(fields, content)
    request = request_head(s3.url, len(body)) + body
    with connect(s3.url, timeout=30) as connection:
        connection.sendall(request[: int(len(request) * fraction)])
        time.sleep(pause)
        answered = select.select([connection], [], [], 0)[0]
        s3.kill()
        with contextlib.suppress(OSError, http.client.HTTPException):
            return read_answer(connection)[0] if answered else None
    return None


def kill_rounds(data_dir: Path, rounds: int, size: int, seed: int) -> dict:
    """Kill the server mid-upload `rounds` times, then check what a restarted server shows.

    "lost" counts uploads answered 201 before the kill and then missing or different;
    "corrupt" counts objects shown whose bytes differ from what was sent."""
    chooser = random.Random(seed)
    first = S3Process(data_dir)
    kept = os.urandom(500_000)
    status = post_key(first.url, "kept.bin", kept, first.credentials)[0]
    first.kill()
    assert status == 201
    outcome = {"kills": 0, "answered": 0, "complete": 0, "absent": 0, "corrupt": 0, "lost": 0}
    outcome["leftovers_seen"] = outcome["leftovers_removed_at_start"] = 0
    sent, answered = {}, set()
    for round_number in range(rounds):
        s3 = S3Process(data_dir)
        outcome["leftovers_removed_at_start"] += s3.removed
        key, content = f"victim-{round_number}.bin", os.urandom(size)
        sent[key] = content
        fraction = chooser.choice([0.3, 0.9, 1.0, 1.0, 1.0])
        # Storing the body takes about size / 700 MB/s here, starting ~10 ms after the last byte
        # leaves: most kills land in that window, the others once the upload has finished.
        pause = chooser.choice([chooser.uniform(0, 1.5) * size / 700_000_000, 0.5, 0.0])
        if upload_then_kill(s3, key, content, fraction, pause) == 201:
            answered.add(key)
        outcome["kills"] += 1
        outcome["leftovers_seen"] += len(local_s3.leftover_files(local_config(data_dir)))
    restarted = S3Process(data_dir)
    outcome["leftovers_removed_at_start"] += restarted.removed
    try:
        assert restarted.read("kept.bin") == kept
        for key, content in sent.items():
            stored = restarted.read(key)
            outcome[
                "absent" if stored is None else "complete" if stored == content else "corrupt"
            ] += 1
            outcome["lost"] += key in answered and stored != content
        outcome["answered"] = len(answered)
        assert_only_whole_objects(local_config(data_dir))
        outcome["leftovers_after_restart"] = len(local_s3.leftover_files(local_config(data_dir)))
    finally:
        restarted.kill()
    return outcome


def local_config(data_dir: Path) -> local_s3.S3Config:
    return local_s3.S3Config(data_dir, ("uploads",), {})


def test_sigkill_mid_upload_then_restart_shows_only_whole_objects(tmp_path):
    outcome = kill_rounds(tmp_path / "data", rounds=6, size=8_000_000, seed=9)
    print(f"\nSIGKILL rounds: {outcome}")
    assert (outcome["kills"], outcome["corrupt"], outcome["lost"]) == (6, 0, 0)
    assert outcome["complete"] + outcome["absent"] == 6
    assert outcome["leftovers_after_restart"] == 0


def test_restart_removes_what_a_killed_upload_left_and_keeps_every_object(tmp_path):
    config = local_s3.S3Config(
        tmp_path / "data", ("uploads",), {S3_TEST_ACCESS_KEY: S3_TEST_SECRET_KEY}
    )
    with local_s3.LocalS3(config) as s3:
        assert post_key(s3.url, "kept.bin", b"kept")[0] == 201
    (config.data_dir / ".tmp" / "0123abcd.part").write_bytes(b"half an upl")
    (config.data_dir / "blobs" / "feedface").write_bytes(b"a blob no record names")
    with local_s3.LocalS3(config):
        assert local_s3.leftover_files(config) == []
        assert local_s3.stored_object(config, "uploads", "kept.bin").read_bytes() == b"kept"


@pytest.mark.stress
def test_stress_sigkill_mid_50_mb_uploads_fifty_times(tmp_path):
    outcome = kill_rounds(tmp_path / "data", rounds=50, size=50 * 1024**2, seed=90)
    print(f"\nSIGKILL rounds: {outcome}")
    assert (outcome["kills"], outcome["corrupt"], outcome["lost"]) == (50, 0, 0)
    assert outcome["complete"] + outcome["absent"] == 50
    assert outcome["leftovers_after_restart"] == 0


# ---- faults: a full disk -----------------------------------------------------------------------


def test_full_disk_is_an_s3_error_and_keeps_the_old_object_whole(tiny_disk, caplog):
    config = local_s3.S3Config(
        data_dir=tiny_disk("2m") / "data",
        buckets=("uploads",),
        credentials={S3_TEST_ACCESS_KEY: S3_TEST_SECRET_KEY},
    )
    first = os.urandom(900_000)
    with local_s3.LocalS3(config) as s3:
        assert post_key(s3.url, "photo.bin", first)[0] == 201
        for key, size in [("big.bin", 3_000_000), ("photo.bin", 1_500_000)]:
            status, body = post_key(s3.url, key, os.urandom(size))
            assert (status, ET.fromstring(body).findtext("Code")) == (500, "InternalError")
        assert local_s3.stored_object(config, "uploads", "photo.bin").read_bytes() == first
        assert local_s3.stored_object(config, "uploads", "big.bin") is None
        assert_only_whole_objects(config)
        assert post_key(s3.url, "small.bin", b"fits")[0] == 201
    logged = [record.getMessage() for record in caplog.records if record.name == "local_s3"]
    assert logged == ["no space left to store uploads: No space left on device"] * 2


def fill_rounds(disk: Path, rounds: int, seed: int) -> dict:
    """Uploads of random sizes onto a disk filled to a random level: the disk runs out at every
    point of an upload (first write, mid-file, the final flush, the record)."""
    chooser = random.Random(seed)
    config = local_s3.S3Config(
        disk / "data", ("uploads",), {S3_TEST_ACCESS_KEY: S3_TEST_SECRET_KEY}
    )
    outcome = {"uploads": rounds, "stored": 0, "refused": 0, "other": 0, "corrupt": 0}
    with local_s3.LocalS3(config) as s3:
        for _ in range(rounds):
            filler = disk / "filler"
            with contextlib.suppress(OSError), filler.open("wb") as file:
                file.write(bytes(chooser.randint(0, 1_900_000)))
            content = chooser.randbytes(chooser.randint(1, 2_000_000))
            status, body = post_key(s3.url, "k.bin", content)
            refused = status == 500 and ET.fromstring(body).findtext("Code") == "InternalError"
            outcome["stored" if status == 201 else "refused" if refused else "other"] += 1
            stored = local_s3.stored_object(config, "uploads", "k.bin")
            outcome["corrupt"] += status == 201 and stored.read_bytes() != content
            assert_only_whole_objects(config)
            filler.unlink()
    hashing = [thread for thread in threading.enumerate() if thread.name == "local-s3-md5"]
    return {**outcome, "hashing threads left": len(hashing)}


def test_a_disk_running_out_at_any_point_leaves_no_temporary_file(tiny_disk):
    outcome = fill_rounds(tiny_disk("2m"), rounds=25, seed=7)
    print(f"\nfull disk: {outcome}")
    assert outcome["uploads"] == outcome["stored"] + outcome["refused"]
    assert (outcome["corrupt"], outcome["hashing threads left"]) == (0, 0)


def test_a_disk_full_at_the_final_flush_leaves_no_temporary_file(tiny_disk):
    """The file's last piece (under 8 KB) waits in the write buffer until close(), so the disk
    can run out at the flush inside close(): the temporary file must still go."""
    disk = tiny_disk("4m")
    config = local_s3.S3Config(
        disk / "data", ("uploads",), {S3_TEST_ACCESS_KEY: S3_TEST_SECRET_KEY}
    )
    with local_s3.LocalS3(config) as s3:
        overhead = len(form_body(real_form(s3.url, "k.bin"), b"")[0])
        content = os.urandom(4 * local_s3.form.READ_CHUNK + 3000 - overhead)
        for pages in range(-4, 3):  # free space around the file's size, a 4 KB page at a time
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            (disk / "filler").write_bytes(bytes(max(0, free - len(content) - pages * 4096)))
            status, _ = post_key(s3.url, "k.bin", content)
            assert status in (201, 500)
            assert_only_whole_objects(config)
            (disk / "filler").unlink()


@pytest.mark.stress
def test_stress_a_disk_running_out_500_times(tiny_disk):
    outcome = fill_rounds(tiny_disk("2m"), rounds=500, seed=70)
    print(f"\nfull disk: {outcome}")
    assert outcome["uploads"] == outcome["stored"] + outcome["refused"]
    assert (outcome["corrupt"], outcome["hashing threads left"]) == (0, 0)


# ---- load: concurrent uploads ------------------------------------------------------------------


def streamed_upload(url: str, key: str, size: int, seed: int) -> tuple[str, str, int]:
    """POST `size` pseudo-random bytes without holding them: (MD5 sent, ETag answered, status)."""
    fields = real_form(url, key)
    head, _ = form_body(fields, b"")
    head = head[: -len(f"\r\n--{BOUNDARY}--\r\n")]
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    md5 = hashlib.md5()
    generator = random.Random(seed)

    def chunks() -> Iterator[bytes]:
        yield head
        remaining = size
        while remaining:
            chunk = generator.randbytes(min(1024**2, remaining))
            md5.update(chunk)
            remaining -= len(chunk)
            yield chunk
        yield tail

    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=300)
    length = len(head) + size + len(tail)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(length),
    }
    connection.request("POST", "/uploads/", chunks(), headers)
    reply = connection.getresponse()
    reply.read()
    connection.close()
    return md5.hexdigest(), reply.getheader("ETag", "").strip('"'), reply.status


def concurrent_uploads(s3: local_s3.LocalS3, count: int, size: int) -> dict:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(
            pool.map(lambda n: streamed_upload(s3.url, f"load/{n}.bin", size, n), range(count))
        )
    elapsed = time.monotonic() - started
    mismatched = 0
    for n, (sent, etag, status) in enumerate(results):
        stored = local_s3.stored_object(s3.config, "uploads", f"load/{n}.bin")
        on_disk = hashlib.md5(stored.read_bytes()).hexdigest() if stored else ""
        mismatched += not (status == 201 and sent == etag == on_disk)
    megabytes = count * size / 1024**2
    print(
        f"\n{count} x {size / 1024**2:.0f} MB in {elapsed:.1f} s ({megabytes / elapsed:.0f} MB/s)"
    )
    return {
        "uploads": count,
        "mismatched": mismatched,
        "leftovers": len(local_s3.leftover_files(s3.config)),
    }


def test_twenty_concurrent_uploads_are_each_stored_with_the_md5_sent(running_s3):
    assert concurrent_uploads(running_s3, 20, 2 * 1024**2) == {
        "uploads": 20, "mismatched": 0, "leftovers": 0,
    }  # fmt: skip


@pytest.mark.stress
def test_stress_twenty_concurrent_50_mb_uploads(running_s3):
    assert concurrent_uploads(running_s3, 20, 50 * 1024**2) == {
        "uploads": 20, "mismatched": 0, "leftovers": 0,
    }  # fmt: skip
