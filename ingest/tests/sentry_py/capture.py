"""Driven by ingest/tests/sentry.rs: the official Python sentry-sdk reports to a running ingest.

SENTRY_DSN is a Faultline DSN. Captures the same exception twice from one line (one group, count
2), the same exception type with another message from another function (a second group), an
exception raised inside the standard library (its frames are not in-app, so the application's
frames decide the group), and a message; then flushes, so every envelope was answered before the process exits.
SENTRY_COMPRESSION picks the body encoding: "gzip" or "br" (the SDK's default when the brotli
module is installed, as it often is).
"""

import json
import os
import sys

import sentry_sdk


def charge(cart_id):
    raise ValueError(f"card declined for cart {cart_id}")


def lookup_user(user_id):
    raise ValueError(f"no such user {user_id}")


def parse_payload(raw):
    return json.loads(raw)


def main():
    sentry_sdk.init(
        dsn=os.environ["SENTRY_DSN"],
        environment="staging",
        release="shop@1.4.2",
        server_name="test-host",
        debug=True,
        _experiments={"transport_compression_algo": os.environ.get("SENTRY_COMPRESSION", "gzip")},
    )
    sentry_sdk.set_tag("tenant", "acme")
    sentry_sdk.set_user({"id": "42"})
    for cart_id in (17, 18):
        try:
            charge(cart_id)
        except ValueError:
            sentry_sdk.capture_exception()
    try:
        lookup_user(7)
    except ValueError:
        sentry_sdk.capture_exception()
    try:
        parse_payload("{not json")
    except ValueError:
        sentry_sdk.capture_exception()
    sentry_sdk.capture_message("checkout queue is backing up", level="warning")
    sentry_sdk.flush(timeout=20)
    print("sentry-sdk", sentry_sdk.VERSION, file=sys.stderr)


if __name__ == "__main__":
    main()
