"""CORS as S3 answers it: the configured origins, or the bucket's own rules set with PUT ?cors;
preflights, and the headers every response carries, errors included.
https://docs.aws.amazon.com/AmazonS3/latest/userguide/cors.html
https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketCors.html
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from xml.etree import ElementTree

import bottle

from local_s3.config import S3Config
from local_s3.errors import XML_DECLARATION, S3Error, xml_elements

CORS_METHODS = ("GET", "HEAD", "POST", "PUT")
CORS_CONFIG_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "HEAD"})
MAX_CORS_RULES = 100
MAX_CORS_XML_BYTES = 64 * 1024
S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"


@dataclass(frozen=True)
class CorsRule:
    """One CORSRule. AllowedOrigin and AllowedHeader may hold one "*" wildcard each."""

    origins: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    max_age: int | None = None

    def allows(self, origin: str, method: str, requested_headers: tuple[str, ...] = ()) -> bool:
        return (
            any(wildcard_match(pattern, origin) for pattern in self.origins)
            and method in self.methods
            and all(
                any(wildcard_match(pattern.lower(), header) for pattern in self.headers)
                for header in requested_headers
            )
        )


def wildcard_match(pattern: str, value: str) -> bool:
    prefix, star, suffix = pattern.partition("*")
    if not star:
        return pattern == value
    return (
        len(value) >= len(prefix + suffix) and value.startswith(prefix) and (value.endswith(suffix))
    )


def startup_rules(config: S3Config) -> tuple[CorsRule, ...]:
    """The rule the local S3 starts with: the configured origins, S3's upload methods, any
    request header, and the two headers the page must read."""
    if not config.cors_origins:
        return ()
    return (CorsRule(config.cors_origins, CORS_METHODS, ("*",), ("ETag", "Location"), 3000),)


def matching_rule(
    rules: tuple[CorsRule, ...], origin: str | None, method: str, headers: tuple[str, ...] = ()
) -> CorsRule | None:
    """S3 applies the first rule that matches the origin, the method and the headers."""
    if not origin:
        return None
    return next((rule for rule in rules if rule.allows(origin, method, headers)), None)


def cors_headers(rule: CorsRule | None, origin: str | None) -> dict[str, str]:
    """On every response, errors included, so the page can read S3's XML error."""
    headers = {"Vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"}
    if rule is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Methods"] = ", ".join(rule.methods)
        if rule.expose:
            headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose)
    return headers


def preflight(environ: Mapping[str, str], rules: tuple[CorsRule, ...]) -> bottle.HTTPResponse:
    origin = environ.get("HTTP_ORIGIN")
    method = environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD")
    if not origin:
        raise S3Error("BadRequest", "Insufficient information. Origin request header needed.")
    if not method:
        raise S3Error("BadRequest", "Invalid Access-Control-Request-Method: null")
    requested = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")
    names = tuple(name.strip().lower() for name in requested.split(",") if name.strip())
    rule = matching_rule(rules, origin, method, names)
    if rule is None:
        raise cors_forbidden(method)
    headers = cors_headers(rule, origin)
    if rule.max_age is not None:
        headers["Access-Control-Max-Age"] = str(rule.max_age)
    if requested:
        headers["Access-Control-Allow-Headers"] = requested
    return bottle.HTTPResponse(status=200, headers=headers)


def parse_cors_configuration(body: bytes) -> tuple[CorsRule, ...]:
    """PUT ?cors: the CORSConfiguration XML, validated as S3 validates it."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise S3Error("MalformedXML") from None
    if local_name(root) != "CORSConfiguration":
        raise S3Error("MalformedXML")
    rules = [cors_rule(element) for element in root if local_name(element) == "CORSRule"]
    if not 1 <= len(rules) <= MAX_CORS_RULES:
        raise S3Error("MalformedXML")
    return tuple(rules)


def cors_rule(element: ElementTree.Element) -> CorsRule:
    values: dict[str, list[str]] = {}
    for child in element:
        values.setdefault(local_name(child), []).append((child.text or "").strip())
    origins, methods = values.get("AllowedOrigin"), values.get("AllowedMethod")
    max_age = values.get("MaxAgeSeconds", [None])[-1]
    if not origins or not methods or not (max_age is None or max_age.isdigit()):
        raise S3Error("MalformedXML")
    unsupported = [method for method in methods if method not in CORS_CONFIG_METHODS]
    if unsupported:
        raise S3Error(
            "InvalidRequest",
            f"Found unsupported HTTP method in CORS config. Unsupported method is {unsupported[0]}",
        )
    return CorsRule(
        tuple(origins),
        tuple(methods),
        tuple(values.get("AllowedHeader", [])),
        tuple(values.get("ExposeHeader", [])),
        int(max_age) if max_age is not None else None,
    )


def local_name(element: ElementTree.Element) -> str:
    """The tag without its namespace: S3's XML carries xmlns="http://s3.amazonaws.com/doc/..."."""
    return element.tag.rpartition("}")[2]


def cors_configuration_xml(rules: tuple[CorsRule, ...]) -> bytes:
    """GET ?cors: the rules back in S3's XML."""
    body = "".join(f"<CORSRule>{cors_rule_xml(rule)}</CORSRule>" for rule in rules)
    root = f'<CORSConfiguration xmlns="{S3_XMLNS}">{body}</CORSConfiguration>'
    return (XML_DECLARATION + root).encode()


def cors_rule_xml(rule: CorsRule) -> str:
    elements = [
        *(("AllowedOrigin", value) for value in rule.origins),
        *(("AllowedMethod", value) for value in rule.methods),
        *(("AllowedHeader", value) for value in rule.headers),
        *(("ExposeHeader", value) for value in rule.expose),
        *([("MaxAgeSeconds", rule.max_age)] if rule.max_age is not None else []),
    ]
    return xml_elements(elements)


def cors_forbidden(method: str) -> S3Error:
    """A refused preflight is S3's AccessDenied with its CORS message (AWS's typo kept). Its
    answer carries no Access-Control-Allow-Origin: no rule allows the OPTIONS method itself."""
    return S3Error(
        "AccessDenied",
        "CORSResponse: This CORS request is not allowed. This is usually because the "
        "evalution of Origin, request method / Access-Control-Request-Method or "
        "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        Method=method,
        ResourceType="OBJECT",
    )
