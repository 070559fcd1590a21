"""What the page is told besides its forms: the limits its script checks each file against
before anything is sent, and the notice it shows after a no-JavaScript upload's round trip
through S3. Both come from the server once, so the page never copies a limit by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

import file_types
import media_types
import registry
import s3_client
import s3_rules
from settings import Config


def limits(config: Config) -> dict[str, Any]:
    return {
        "max_bytes": config.max_bytes,
        "max_human": s3_rules.human_size(config.max_bytes),
        "allowed_types": list(
            media_types.signable_types(config.allowed_types, config.allow_active_types)
        ),
        "allowed_names": file_types.describe(config.allowed_types),
        "type_names": file_types.TYPE_NAMES,
        "policy_ttl": config.policy_ttl,
        "form_ttl": config.form_ttl,
        "auto_start": config.auto_start,
        "multipart_threshold": config.multipart_threshold,
    }


class Notice(NamedTuple):
    text: str
    is_error: bool = False
    url: str = ""


# After a failed no-JavaScript upload, /uploads/done sends the browser to /?error=<status>: a
# code, never text, so a link to the page cannot make it say anything but these sentences.
NOJS_ERRORS = {
    "400": "the file went to a different bucket.",
    "403": "this server did not issue the form it was sent with.",
    "404": "S3 has no such file, or this app may not read it.",
    "409": "the file in S3 is not the one the browser reported.",
    "415": "the file's first bytes are not those of the kind of file its form was for, so it "
    "was deleted.",
    "502": "S3 could not be reached to check it; try again.",
    "503": "the file is in S3 but could not be recorded; try again.",
    "504": "S3 did not answer in time; try again.",
}


def notice(config: Config, query: Mapping[str, str], moment: datetime) -> Notice | None:
    """The line shown after the no-JavaScript form's redirect back to the page; the name is
    the one S3 holds for an upload of ours, never text from the query."""
    key = query.get("uploaded", "")
    if key.startswith(config.key_prefix + "/"):
        try:
            info = s3_client.head_object(config, key, moment)
        except s3_client.S3Failure:
            return None
        name = registry.upload_record(key, info, moment)["filename"]
        return Notice(f"Uploaded {name}", url=registry.download_url(config, key, moment))
    if query.get("error"):
        reason = NOJS_ERRORS.get(query["error"], "try again.")
        return Notice(f"Upload not recorded: {reason}", is_error=True)
    return None
