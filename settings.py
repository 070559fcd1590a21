"""The app's settings: one table that feeds the environment reader, `--help` and the README.

Every setting is written once, in `SETTINGS`: its variable, its default, the function that
reads it and one line of help. `Config.from_env` reads the environment (and `.env`) through that
table; `Config` itself has no defaults, so a default cannot drift from the one the help shows.
"""

from __future__ import annotations

import base64
import hmac
import importlib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bottle

import media_types
import s3_rules
import signer
from rate_limit import RateLimit

KEY_PREFIX = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
MIME_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"  # RFC 6838 restricted-name
MIME_TYPE = re.compile(rf"{MIME_NAME}/{MIME_NAME}")
MIME_PATTERN = re.compile(rf"{MIME_NAME}/(\*|{MIME_NAME})")
RATE_UNITS = {"second": 1, "minute": 60, "hour": 3600}
EVERY_INTERFACE = ("0.0.0.0", "::", "")


class ConfigError(ValueError):
    """A setting is missing or wrong; the message is one sentence naming the variable."""


# ---- Readers: (variable name, text or None) -> value, or ConfigError -------------------------

Reader = Callable[[str, str | None], Any]


def whole_number(low: int, high: int) -> Reader:
    def read(name: str, text: str | None) -> int:
        text = text or ""
        if not re.fullmatch(r"[0-9]{1,12}", text.strip()) or not low <= int(text) <= high:
            raise ConfigError(f"{name} must be a whole number from {low} to {high}, not {text!r}.")
        return int(text)

    return read


def text_or_none(name: str, text: str | None) -> str | None:
    return text or None


def read_path(name: str, text: str | None) -> Path:
    return Path(text or ".")


def read_bucket(name: str, bucket: str | None) -> str | None:
    if bucket and not s3_rules.BUCKET_NAME.fullmatch(bucket):
        raise ConfigError(f"{name} {bucket!r} is not a valid S3 bucket name.")
    return bucket or None


def read_endpoint(name: str, endpoint: str | None) -> str | None:
    if not endpoint:
        return None
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError(f"{name} {endpoint!r} is not an http(s):// URL.")
    return endpoint.rstrip("/")


def read_public_url(name: str, url: str | None) -> str | None:
    """An origin only (scheme, host, optional port): it is compared with the browser's Origin."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
        raise ConfigError(f"{name} {url!r} must be an origin such as https://uploads.example.com.")
    if parts.query or parts.fragment or parts.username:
        raise ConfigError(f"{name} {url!r} must be an origin such as https://uploads.example.com.")
    return f"{parts.scheme}://{parts.netloc}"


def read_allowed_types(name: str, text: str | None) -> tuple[str, ...]:
    patterns = tuple(item.strip().lower() for item in (text or "").split(",") if item.strip())
    for pattern in patterns:
        if not MIME_PATTERN.fullmatch(pattern):
            raise ConfigError(f"{name} entry {pattern!r} is not like image/png.")
    if not patterns:
        raise ConfigError(f"{name} is empty; list types like image/*,application/pdf.")
    return patterns


def read_key_prefix(name: str, text: str | None) -> str:
    prefix = (text or "").strip("/")
    if not KEY_PREFIX.fullmatch(prefix) or ".." in prefix.split("/"):
        raise ConfigError(
            f"{name} {prefix!r} must be /-separated names of letters, digits, "
            "'.', '-' and '_', none of them '..'."
        )
    return prefix


def check_disjoint(key_prefix: str, registry_prefix: str) -> None:
    """No upload key may ever land in the registry: neither prefix may contain the other."""
    a, b = key_prefix + "/", registry_prefix + "/"
    if a.startswith(b) or b.startswith(a):
        raise ConfigError(
            f"UPLOAD_KEY_PREFIX {key_prefix!r} and UPLOAD_REGISTRY_PREFIX {registry_prefix!r} "
            "overlap; give them different first folders, such as uploads and registry."
        )


def read_rate_limit(name: str, text: str | None) -> RateLimit | None:
    text = text or ""
    if text.strip().lower() in ("0", "off"):
        return None
    match = re.fullmatch(r"\s*([0-9]{1,6})\s*/\s*(second|minute|hour)\s*", text)
    if not match or int(match[1]) == 0:
        raise ConfigError(f"{name} {text!r} must look like 30/minute, or be off.")
    return RateLimit(int(match[1]), RATE_UNITS[match[2]])


def read_acl(name: str, acl: str | None) -> str | None:
    if acl and acl not in s3_rules.CANNED_ACLS:
        raise ConfigError(f"{name} {acl!r} is not a canned ACL such as private.")
    return acl or None


def one_of(*choices: str) -> Reader:
    def read(name: str, text: str | None) -> str:
        value = (text or "").strip().lower()
        if value not in choices:
            raise ConfigError(f"{name} must be {' or '.join(choices)}, not {text!r}.")
        return value

    return read


def read_switch(name: str, text: str | None) -> bool:
    text = (text or "").strip().lower()
    if text not in ("on", "off"):
        raise ConfigError(f"{name} must be on or off, not {text!r}.")
    return text == "on"


def read_trusted_proxy(name: str, address: str | None) -> str | None:
    """waitress believes X-Forwarded-* only from this one peer address.

    waitress also takes "*", trusting every peer: then any client writes its own
    X-Forwarded-For and picks the address the rate limit counts, so each request buys a fresh
    budget. The app refuses it rather than starting in a state that looks protected.
    """
    if address == "*":
        raise ConfigError(
            f"{name}=* would let every client choose its own address (and a fresh rate budget);"
            " name your proxy's address, e.g. 127.0.0.1."
        )
    if address:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(
                f"{name} {address!r} is not an IP address such as 127.0.0.1."
            ) from None
    return address or None


def read_upload_auth(name: str, text: str | None) -> Callable[[bottle.BaseRequest], Any] | None:
    """basic:USER:PASSWORD, or module:function, imported now so that a typo stops start-up."""
    if not text:
        return None
    if text.startswith("basic:"):
        user, colon, password = text.removeprefix("basic:").partition(":")
        if not user or not colon or not password:
            raise ConfigError(f"{name} basic:USER:PASSWORD needs a user and a password.")
        return BasicAuth(user, password)
    module_name, colon, function_name = text.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError):
        function = None
    if not colon or not callable(function):  # the text may be a mistyped password: never shown
        raise ConfigError(f"{name} is not basic:USER:PASSWORD or module:function.")
    return function


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic authentication (RFC 7617) against one user and password; repr hides both."""

    user: str = field(repr=False)
    password: str = field(repr=False)

    def __call__(self, request: bottle.BaseRequest) -> bool:
        scheme, _, encoded = request.environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:  # not base64, or not even ASCII
            return False
        expected = f"{self.user}:{self.password}".encode()
        return scheme.lower() == "basic" and hmac.compare_digest(given, expected)


# ---- The table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One environment variable. `field` is its Config field; None when it is read together
    with others (the credentials, the region): see `Config.from_env`."""

    name: str
    default: str | None
    field: str | None
    read: Reader
    help: str
    secret: bool = False  # its value never appears in an error, the help or the README


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "S3_BUCKET",
        None,
        "bucket",
        read_bucket,
        "bucket to upload to; unset starts the embedded local S3",
    ),
    Setting(
        "AWS_ACCESS_KEY_ID", None, None, text_or_none, "access key id (required with S3_BUCKET)"
    ),
    Setting(
        "AWS_SECRET_ACCESS_KEY",
        None,
        None,
        text_or_none,
        "secret key (required with S3_BUCKET; never shown)",
        secret=True,
    ),
    Setting(
        "AWS_SESSION_TOKEN",
        None,
        None,
        text_or_none,
        "session token for temporary credentials",
        secret=True,
    ),
    Setting(
        "AWS_REGION",
        None,
        None,
        text_or_none,
        "bucket region, e.g. eu-west-1 (or AWS_DEFAULT_REGION)",
    ),
    Setting("AWS_DEFAULT_REGION", None, None, text_or_none, "used when AWS_REGION is unset"),
    Setting(
        "AWS_ENDPOINT_URL_S3",
        None,
        "endpoint",
        read_endpoint,
        "custom S3 endpoint (MinIO, R2, Ceph); path-style URLs",
    ),
    Setting(
        "UPLOAD_MAX_BYTES",
        "10485760",
        "max_bytes",
        whole_number(1, s3_rules.MAX_OBJECT_BYTES),
        "largest file accepted, in bytes (10 MB; up to 5 TiB, over 5 GB in parts)",
    ),
    Setting(
        "UPLOAD_MULTIPART_THRESHOLD",
        str(64 * s3_rules.MiB),
        "multipart_threshold",
        whole_number(s3_rules.MIN_PART_BYTES, s3_rules.MAX_POST_OBJECT_BYTES),
        "files larger than this, in bytes, go in parts (64 MiB), resumable",
    ),
    Setting(
        "UPLOAD_PART_SIZE",
        str(8 * s3_rules.MiB),
        "part_size",
        whole_number(s3_rules.MIN_PART_BYTES, s3_rules.MAX_PART_BYTES),
        "bytes per part (8 MiB; at least S3's 5 MiB; grows for files over 10,000 parts)",
    ),
    Setting(
        "UPLOAD_PARALLEL_PARTS",
        "4",
        "parallel_parts",
        whole_number(1, 16),
        "parts of one file the browser sends at once",
    ),
    Setting(
        "UPLOAD_ALLOWED_TYPES",
        "image/*,application/pdf,text/plain",
        "allowed_types",
        read_allowed_types,
        "allowed MIME types",
    ),
    Setting(
        "UPLOAD_ALLOW_ACTIVE_TYPES",
        "off",
        "allow_active_types",
        read_switch,
        "on|off: sign types browsers run (SVG, HTML, XML, JavaScript...), as downloads",
    ),
    Setting(
        "UPLOAD_KEY_PREFIX",
        "uploads",
        "key_prefix",
        read_key_prefix,
        "object keys start with PREFIX/YYYY/MM/DD/",
    ),
    Setting(
        "UPLOAD_REGISTRY_PREFIX",
        "registry",
        "registry_prefix",
        read_key_prefix,
        "the upload list is kept in the bucket under PREFIX/, apart from the uploads",
    ),
    Setting(
        "UPLOAD_POLICY_TTL",
        "300",
        "policy_ttl",
        whole_number(1, 7 * 24 * 3600),  # a week: a form, not an archive
        "seconds a signed upload form stays valid",
    ),
    Setting(
        "UPLOAD_FORM_TTL",
        "3600",
        "form_ttl",
        whole_number(60, 7 * 24 * 3600),
        "seconds the no-JavaScript form stays valid (a person picks a file first)",
    ),
    Setting(
        "UPLOAD_RATE_LIMIT",
        "30/minute",
        "rate_limit",
        read_rate_limit,
        "signed forms per client, N/second|minute|hour; off",
    ),
    Setting(
        "UPLOAD_METHOD",
        "post",
        "upload_method",
        one_of("post", "put"),
        "how browsers send files: post (a signed form) or put (a presigned URL, for R2 or B2)",
    ),
    Setting(
        "UPLOAD_AUTO_START",
        "on",
        "auto_start",
        read_switch,
        "on: upload as soon as files are chosen; off: review them, then Start",
    ),
    Setting(
        "S3_ACL",
        None,
        "acl",
        read_acl,
        "canned ACL for uploads, e.g. private (unset: bucket default)",
    ),
    Setting(
        "S3_TIMEOUT",
        "5",
        "s3_timeout",
        whole_number(1, 300),
        "seconds to wait for S3 when checking an upload",
    ),
    Setting(
        "UPLOAD_AUTH",
        None,
        "auth",
        read_upload_auth,
        "login for page and forms: basic:USER:PASSWORD, or module:function(request) -> allowed",
        secret=True,
    ),
    Setting("HOST", "127.0.0.1", "host", text_or_none, "address the app listens on"),
    Setting(
        "PUBLIC_HOST",
        None,
        "public_host",
        text_or_none,
        "host name browsers use to reach HOST, e.g. with HOST=0.0.0.0",
    ),
    Setting("PORT", "8080", "port", whole_number(1, 65535), "port the app listens on"),
    Setting(
        "PUBLIC_URL",
        None,
        "public_url",
        read_public_url,
        "the app's origin behind a platform's HTTPS router, e.g. https://uploads.example.com",
    ),
    Setting(
        "TRUSTED_PROXY",
        None,
        "trusted_proxy",
        read_trusted_proxy,
        "address of your reverse proxy, e.g. 127.0.0.1: its X-Forwarded-* name the client",
    ),
    Setting(
        "S3_PORT",
        "9000",
        "s3_port",
        whole_number(0, 65535),
        "port of the embedded local S3 (only without S3_BUCKET)",
    ),
    Setting(
        "DATA_DIR",
        "data",
        "data_dir",
        read_path,
        "folder of the embedded S3's objects (and of an old uploads.sqlite3 to migrate)",
    ),
    Setting(
        "WAITRESS_THREADS",
        "4",
        "threads",
        whole_number(1, 256),
        "worker threads serving requests (2 per core is plenty)",
    ),
    Setting(
        "ACCESS_LOG",
        "off",
        "access_log",
        read_switch,
        "one log line per request, on|off (a proxy in front logs too)",
    ),
)
DEFAULTS = {setting.name: setting.default for setting in SETTINGS}


# ---- Config ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Everything the app needs to know, read once at start-up by `from_env`."""

    credentials: signer.Credentials | None
    bucket: str | None
    region: str
    endpoint: str | None
    max_bytes: int
    multipart_threshold: int
    part_size: int
    parallel_parts: int
    allowed_types: tuple[str, ...]
    allow_active_types: bool
    key_prefix: str
    registry_prefix: str
    policy_ttl: int
    form_ttl: int
    rate_limit: RateLimit | None
    upload_method: str
    auto_start: bool
    acl: str | None
    s3_timeout: float
    auth: Callable[[bottle.BaseRequest], Any] | None
    host: str
    public_host: str | None
    port: int
    public_url: str | None
    trusted_proxy: str | None
    s3_port: int
    data_dir: Path
    threads: int
    access_log: bool
    embedded: bool = False  # set by server.start_embedded_s3, never by a setting

    @classmethod
    def from_env(cls, environ: Mapping[str, str], dotenv: Path | None = None) -> Config:
        """Read the settings; a `.env` file fills in what the environment leaves unset."""
        values = {**read_dotenv(dotenv), **environ}
        text = {s.name: values.get(s.name) or s.default for s in SETTINGS}
        fields = {s.field: read_setting(s, text[s.name]) for s in SETTINGS if s.field}
        check_active_types(fields["allowed_types"], fields["allow_active_types"])
        external = fields["bucket"] is not None
        check_disjoint(fields["key_prefix"], fields["registry_prefix"])
        return cls(
            credentials=read_credentials(text) if external else None,
            region=read_region(text) if external else "us-east-1",
            **fields,
        )

    @property
    def browser_host(self) -> str:
        """The host in the URLs browsers are given: listening on every interface (0.0.0.0, ::)
        is not an address a browser can use, so that means loopback unless PUBLIC_HOST says."""
        if self.public_host:
            return self.public_host
        return "127.0.0.1" if self.host in EVERY_INTERFACE else self.host

    @property
    def app_origin(self) -> str:
        """The origin browsers load the page from: PUBLIC_URL when a platform's router (TLS,
        port 443) stands in front, else this server's own address."""
        return self.public_url or f"http://{self.browser_host}:{self.port}"


def check_active_types(patterns: tuple[str, ...], allow_active: bool) -> None:
    """Without UPLOAD_ALLOW_ACTIVE_TYPES, an exact type that browsers run is a mistake to say
    at start-up, not a 415 for every user; a family such as image/* signs its safe types only."""
    if allow_active:
        return
    active = [p for p in patterns if not p.endswith("/*") and media_types.is_active(p)]
    if active:
        raise ConfigError(
            f"UPLOAD_ALLOWED_TYPES names {', '.join(active)}, which browsers may run or show as a"
            " page; set UPLOAD_ALLOW_ACTIVE_TYPES=on to accept it, as a download."
        )
    if not media_types.signable_types(patterns, allow_active):
        raise ConfigError(
            "UPLOAD_ALLOWED_TYPES matches no type on the safe list (media_types.SAFE_TYPES);"
            " name one, or set UPLOAD_ALLOW_ACTIVE_TYPES=on."
        )


def read_setting(setting: Setting, text: str | None) -> Any:
    """The setting's value, or its ConfigError; a secret's value is cut out of any message, so a
    reader written without that care still cannot print a password to the terminal or a log."""
    try:
        return setting.read(setting.name, text)
    except ConfigError as error:
        if setting.secret and text and text in str(error):
            raise ConfigError(f"{setting.name} is not valid (its value is not shown).") from None
        raise


def read_credentials(text: Mapping[str, str | None]) -> signer.Credentials:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if not text[name]:
            raise ConfigError(f"{name} is not set; it is required when S3_BUCKET is set.")
    return signer.Credentials(
        text["AWS_ACCESS_KEY_ID"], text["AWS_SECRET_ACCESS_KEY"], text["AWS_SESSION_TOKEN"]
    )


def read_region(text: Mapping[str, str | None]) -> str:
    region = text["AWS_REGION"] or text["AWS_DEFAULT_REGION"]
    if not region:
        raise ConfigError("AWS_REGION is not set; it is required when S3_BUCKET is set.")
    if not re.fullmatch(r"[a-z0-9-]{2,32}", region):
        raise ConfigError(f"AWS_REGION {region!r} is not a region name like eu-west-1.")
    return region


def read_dotenv(path: Path | None) -> dict[str, str]:
    """Parse a simple `.env` file: KEY=VALUE lines, `#` comments, optional quotes."""
    if path is None or not path.is_file():
        return {}
    values = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip().removeprefix("export ").strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            raise ConfigError(f"{path} line {number} is not KEY=VALUE.")
        values[name.strip()] = value.strip().strip("\"'")
    return values


# ---- The table, shown to people --------------------------------------------------------------


def help_lines() -> list[str]:
    """`python server.py --help`: one line per setting, its default in brackets."""
    return [f"  {s.name:<22} {s.help}" + f" [{s.default}]" * bool(s.default) for s in SETTINGS]


def markdown_table() -> list[str]:
    """The README's settings table (`python settings.py` prints it); a test keeps them equal."""
    rows = [
        (f"`{s.name}`", f"`{s.default}`" if s.default else "-", s.help.replace("|", "\\|"))
        for s in SETTINGS
    ]
    header = [("Variable", "Default", "What it sets"), ("---", "---", "---")]
    return ["| " + " | ".join(cells) + " |" for cells in header + rows]


if __name__ == "__main__":
    print("\n".join(markdown_table()))
