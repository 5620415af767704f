"""The embedded S3 endpoint: moto's S3 service alone, over HTTP/1.1.

``python -m moto.server`` serves every AWS service moto emulates and, for
each request, works out which one is meant under one process-wide lock; its
werkzeug development server also closes the connection after every
response. planzoom only speaks S3 to it, so this serves moto's S3
application directly (the one moto's dispatcher would pick) with waitress:
a fixed pool of worker threads and keep-alive connections, the same S3 API
and behaviour for a fraction of the CPU per request (docs/performance.md).
moto stores any browser-based POST upload it gets; S3 and MinIO refuse one
its policy does not allow, so this endpoint checks POST policies as they do
(:mod:`planzoom_devstack.postpolicy`).

    python -m planzoom_devstack.s3server -H 127.0.0.1 -p 9000

State lives in memory and is gone when the process ends. Not for production:
point ``PLANZOOM_S3_ENDPOINT_URL`` at MinIO, AWS S3 or R2 there.
"""

from __future__ import annotations

import argparse

import waitress
from moto.moto_server.werkzeug_app import create_backend_app

from planzoom_devstack.postpolicy import PostPolicy

#: Open connections served at once. Every tile worker keeps up to
#: ``PLANZOOM_TILE_PUT_CONCURRENCY`` (32) keep-alive connections per upload
#: process; waitress stops accepting beyond its limit (default 100), which
#: would leave new clients waiting on idle ones.
CONNECTION_LIMIT = 2048


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m planzoom_devstack.s3server",
                                     description="moto's S3 API on one HTTP port")
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("-p", "--port", type=int, default=9000, help="TCP port")
    parser.add_argument("--secret-key", default="planzoom-secret",
                        help="the secret key that signs POST policies (checked here; "
                             "moto itself accepts any)")
    parser.add_argument("--threads", type=int, default=8,
                        help="worker threads handling requests (moto holds the GIL "
                             "for most of a request, so more rarely help)")
    args = parser.parse_args(argv)
    app = PostPolicy(create_backend_app("s3"), args.secret_key)
    waitress.serve(app, host=args.host, port=args.port,
                   threads=args.threads, connection_limit=CONNECTION_LIMIT,
                   asyncore_use_poll=True, ident="planzoom-s3", _quiet=True)


if __name__ == "__main__":
    main()
