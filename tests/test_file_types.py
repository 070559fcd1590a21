"""File types for people, and the magic numbers that check a no-JavaScript upload."""

import pytest

import file_types


@pytest.mark.parametrize(
    ("patterns", "sentence"),
    [
        (["image/*", "application/pdf", "text/plain"], "images, PDFs and text files"),
        (["application/pdf"], "PDFs"),
        (["image/png", "image/jpeg"], "PNG images and JPEG images"),
        (["text/*", "text/plain"], "text files"),
        (["application/zip", "image/*"], "application/zip and images"),
    ],
)
def test_allowed_types_are_described_in_words(patterns: list[str], sentence: str) -> None:
    assert file_types.describe(patterns) == sentence


@pytest.mark.parametrize(
    ("content_type", "name"),
    [
        ("image/png", "PNG image"),
        ("image/x-icon", "image"),
        ("application/pdf", "PDF"),
        ("text/plain", "text file"),
        ("text/csv", "text file"),
        ("application/zip", "application/zip"),
    ],
)
def test_a_stored_type_is_named_for_people(content_type: str, name: str) -> None:
    assert file_types.type_name(content_type) == name


@pytest.mark.parametrize(
    ("head", "content_type"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"GIF87a\x01\x00", "image/gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"%PDF-1.7\n", "application/pdf"),
        (b"Dear reader,\r\n\tthanks.\n", "text/plain"),
        ("Été à Zürich".encode(), "text/plain"),
        ("naïve".encode()[:3], "text/plain"),  # a character cut by the range
        (b"PK\x03\x04", None),
        (b"text with a \x00 NUL", None),
        (b"\xff\xfe latin-1 bytes \xe9", None),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"", None),
    ],
)
def test_first_bytes_show_the_type(head: bytes, content_type: str | None) -> None:
    assert file_types.sniff(head) == content_type


@pytest.mark.parametrize(
    ("declared", "head", "acceptable"),
    [
        ("image/png", b"\x89PNG\r\n\x1a\n", True),
        ("image/png", b"\xff\xd8\xff", False),
        ("image/jpeg", b"PK\x03\x04", False),
        ("text/plain", b"hello", True),
        ("application/pdf", b"hello", False),
        ("application/zip", b"PK\x03\x04", False),  # not allowed, whatever its bytes
        ("image/x-icon", b"\x00\x00\x01\x00", True),  # allowed by image/*, bytes not known here
    ],
)
def test_a_declared_type_is_acceptable_only_if_allowed_and_the_bytes_agree(
    declared: str, head: bytes, acceptable: bool
) -> None:
    allowed = ("image/*", "application/pdf", "text/plain")
    assert file_types.acceptable(declared, head, allowed) is acceptable


def test_each_allowed_pattern_gets_a_no_js_form_and_a_family_offers_its_named_types() -> None:
    kinds = file_types.form_kinds(["image/*", "application/pdf", "video/*"])

    assert [(k.name, k.accept, k.content_type) for k in kinds] == [
        ("images", "image/*", "image/"),
        ("PDFs", "application/pdf", "application/pdf"),
    ]
    assert list(kinds[0].choices) == ["image/png", "image/jpeg", "image/gif", "image/webp"]
    assert kinds[1].choices == {}
