"""S3 browser-based POST uploads checked as S3 checks them, in front of
moto, which stores any POST it gets.

A POST of ``multipart/form-data`` to a bucket is refused with 403
``AccessDenied`` unless its policy (a base64 JSON document) is signed with
SigV4 by the endpoint's own secret key, has not expired, and every one of
its conditions holds: ``bucket``, ``key`` (``eq`` or ``starts-with``),
``Content-Type``, ``content-length-range`` (the file's size) and any other
field; and every form field but the file, ``policy`` and the signature is
named by a condition. Source: Amazon S3 API reference, "Creating a POST
policy" and "Authenticating requests in browser-based uploads (AWS
Signature Version 4)".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import time
from calendar import timegm

from werkzeug.formparser import parse_form_data

#: Form fields a policy need not name.
_UNCONDITIONED = {"policy", "x-amz-signature", "file"}


def _signing_key(secret: str, date: str, region: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _denied(start_response, why: str):
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
            f"<Message>Invalid according to Policy: {why}</Message></Error>").encode()
    start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                     ("Content-Length", str(len(body)))])
    return [body]


def check(fields: dict[str, str], size: int, bucket: str, secret: str) -> str | None:
    """Why this POST is refused, or None: ``fields`` are the form fields
    (names as sent), ``size`` the file's bytes."""
    lower = {k.lower(): v for k, v in fields.items()}
    policy_b64 = lower.get("policy", "")
    credential = lower.get("x-amz-credential", "")
    parts = credential.split("/")
    if len(parts) != 5 or lower.get("x-amz-algorithm") != "AWS4-HMAC-SHA256":
        return "Signature Version 4 fields are missing"
    expected = hmac.new(_signing_key(secret, parts[1], parts[2]), policy_b64.encode(),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, lower.get("x-amz-signature", "")):
        return "the policy's signature does not match"
    try:
        policy = json.loads(base64.b64decode(policy_b64))
        expires = timegm(time.strptime(policy["expiration"][:19], "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, KeyError, TypeError):
        return "the policy is not a valid policy document"
    if time.time() > expires:
        return "Policy expired"
    values = {**lower, "bucket": bucket}
    named = set()
    for condition in policy.get("conditions", []):
        if isinstance(condition, dict):
            ((name, value),) = condition.items()
            op, name = "eq", name.lower()
        elif condition[0] == "content-length-range":
            if not int(condition[1]) <= size <= int(condition[2]):
                return (f"Policy Condition failed: content-length-range {condition[1]}-"
                        f"{condition[2]}, the file has {size} bytes")
            continue
        else:
            op, name, value = condition[0], condition[1].lstrip("$").lower(), condition[2]
        named.add(name)
        actual = values.get(name)
        if actual is None or (op == "eq" and actual != value) or (
                op == "starts-with" and not actual.startswith(value)):
            return f"Policy Condition failed: [{op!r}, '${name}', {value!r}]"
    unnamed = set(lower) - named - _UNCONDITIONED
    if unnamed:
        return f"Extra input fields: {', '.join(sorted(unnamed))}"
    return None


class PostPolicy:
    """WSGI middleware: POST uploads checked (:func:`check`) before ``app``
    stores them."""

    def __init__(self, app, secret: str):
        self.app, self.secret = app, secret

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "POST" or not environ.get(
                "CONTENT_TYPE", "").startswith("multipart/form-data"):
            return self.app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        form_env = {**environ, "wsgi.input": io.BytesIO(body)}
        _, form, files = parse_form_data(form_env)
        upload = files.get("file")
        size = len(upload.read()) if upload is not None else 0
        bucket = environ.get("PATH_INFO", "/").strip("/").split("/")[0]
        why = check(dict(form.items()), size, bucket, self.secret)
        if why is not None:
            return _denied(start_response, why)
        return self.app({**environ, "wsgi.input": io.BytesIO(body)}, start_response)
