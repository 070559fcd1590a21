"""ListObjectsV2's paging rules, as a pure function of the sorted keys (local_s3/listing.py)."""

import pytest

from local_s3.errors import S3Error
from local_s3.listing import ListRequest, list_page, parse_list_request

KEYS = sorted(["a/1", "a/2", "a/b/1", "a/b/2", "a/c", "b", "c/x", "é"])


def every_page(request: ListRequest) -> list:
    pages = [list_page(KEYS, request)]
    while pages[-1].is_truncated:
        assert len(pages) <= len(KEYS), "the continuation tokens go round in a circle"
        token = pages[-1].next_continuation_token
        pages.append(
            list_page(KEYS, ListRequest(**{**request.__dict__, "continuation_token": token}))
        )
    return pages


def test_keys_come_in_utf8_binary_order_after_start_after():
    assert list_page(KEYS, ListRequest(start_after="a/c")).keys == ("b", "c/x", "é")


def test_a_delimiter_rolls_keys_up_into_common_prefixes():
    page = list_page(KEYS, ListRequest(delimiter="/"))
    assert page.keys == ("b", "é")
    assert page.common_prefixes == ("a/", "c/")


def test_a_common_prefix_counts_as_one_key_against_max_keys():
    page = list_page(KEYS, ListRequest(delimiter="/", max_keys=2))
    assert (page.keys, page.common_prefixes, page.is_truncated) == (("b",), ("a/",), True)


@pytest.mark.parametrize("max_keys", [1, 2, 3, 7])
@pytest.mark.parametrize("delimiter", ["", "/"])
@pytest.mark.parametrize("prefix", ["", "a/", "a/b", "z"])
def test_continuation_tokens_walk_every_key_exactly_once(max_keys, delimiter, prefix):
    request = ListRequest(prefix=prefix, delimiter=delimiter, max_keys=max_keys)
    pages = every_page(request)
    walked = [item for page in pages for item in (*page.keys, *page.common_prefixes)]
    whole = list_page(KEYS, ListRequest(prefix=prefix, delimiter=delimiter))
    assert sorted(walked) == sorted((*whole.keys, *whole.common_prefixes))
    assert all(len(page.keys) + len(page.common_prefixes) <= max_keys for page in pages)


def test_the_continuation_token_wins_over_start_after():
    first = list_page(KEYS, ListRequest(max_keys=1))
    page = list_page(
        KEYS, ListRequest(start_after="c/x", continuation_token=first.next_continuation_token)
    )
    assert page.keys[0] == "a/2"


def test_max_keys_above_1000_is_capped_at_1000():
    assert parse_list_request({"max-keys": "5000"}).max_keys == 1000


def test_max_keys_zero_lists_nothing_and_is_not_truncated():
    page = list_page(KEYS, parse_list_request({"max-keys": "0"}))
    assert (page.keys, page.is_truncated) == ((), False)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"max-keys": "-1"}, "Provided max-keys not an integer or within integer range"),
        ({"max-keys": "ten"}, "Provided max-keys not an integer or within integer range"),
        ({"max-keys": "2147483648"}, "Provided max-keys not an integer or within integer range"),
        ({"encoding-type": "base64"}, "Invalid Encoding Method specified in Request"),
        ({"continuation-token": "%%%"}, "The continuation token provided is incorrect"),
        ({"continuation-token": "_w=="}, "The continuation token provided is incorrect"),
    ],
)
def test_bad_parameters_are_invalid_argument_with_s3s_message(query, message):
    with pytest.raises(S3Error) as refused:
        parse_list_request(query)
    assert (refused.value.code, refused.value.message) == ("InvalidArgument", message)


# --- through a running local S3, as botocore sends and parses it ---------------------------------


@pytest.fixture
def s3_client(running_s3):
    """boto3's S3 client on the running local S3, path-style, with the tests' credentials."""
    import boto3
    from botocore.config import Config as BotoConfig
    from conftest import S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY

    return boto3.client(
        "s3",
        endpoint_url=running_s3.url,
        region_name="us-east-1",
        aws_access_key_id=S3_TEST_ACCESS_KEY,
        aws_secret_access_key=S3_TEST_SECRET_KEY,
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def test_botocores_paginator_walks_every_key_through_the_local_s3(s3_client):
    names = ["registry/b", "registry/a", "registry/é ü", "registry/x/1", "other", "registry/c"]
    for name in names:
        s3_client.put_object(Bucket="uploads", Key=name, Body=b"record")
    pages = s3_client.get_paginator("list_objects_v2").paginate(
        Bucket="uploads", Prefix="registry/", PaginationConfig={"PageSize": 2}
    )
    listed = [(page["KeyCount"], [o["Key"] for o in page.get("Contents", [])]) for page in pages]
    assert [keys for _, keys in listed] == [
        ["registry/a", "registry/b"],
        ["registry/c", "registry/x/1"],
        ["registry/é ü"],
    ]
    assert [count for count, _ in listed] == [2, 2, 1]


def test_listing_with_a_delimiter_returns_common_prefixes_url_encoded(s3_client):
    for name in ["r/a b/1", "r/a b/2", "r/c"]:
        s3_client.put_object(Bucket="uploads", Key=name, Body=b"x")
    answer = s3_client.list_objects_v2(Bucket="uploads", Prefix="r/", Delimiter="/")
    assert [p["Prefix"] for p in answer["CommonPrefixes"]] == ["r/a b/"]
    assert [o["Key"] for o in answer["Contents"]] == ["r/c"]
    assert answer["Contents"][0]["Size"] == 1
    assert answer["IsTruncated"] is False


def test_an_unsigned_listing_is_access_denied(running_s3):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{running_s3.url}/uploads?list-type=2", timeout=10)
    assert refused.value.code == 403
    assert b"<Code>AccessDenied</Code>" in refused.value.read()


def test_a_bad_max_keys_is_invalid_argument_over_http(s3_client):
    import botocore.exceptions

    with pytest.raises(botocore.exceptions.ClientError) as refused:
        s3_client.list_objects_v2(Bucket="uploads", MaxKeys=-1)
    assert refused.value.response["Error"]["Code"] == "InvalidArgument"
