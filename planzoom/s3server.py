"""The embedded S3 endpoint: moto's S3 service alone, over HTTP/1.1.

``python -m moto.server`` serves every AWS service moto emulates. For each
request it works out which one is meant, under one process-wide lock, by
parsing the request's signature and scanning moto's package directory: on
this machine that cost about 40 % of moto's CPU per PUT. Its werkzeug
development server also closes the connection after every response, so each
PUT pays a TCP connect and a new server thread. planzoom only speaks S3 to
it, so this serves moto's S3 application directly (the one moto's dispatcher
would pick) with waitress: a fixed pool of worker threads and keep-alive
connections. Same S3 API and behaviour. Server CPU per 20 kB PUT on this
machine, from bare 32-thread loops: about 3.5 ms under ``moto.server``'s
dispatcher, 2.0 ms with werkzeug's server alone, 1.3 ms with waitress
(``make bench`` measures the endpoint it runs against).

    python -m planzoom.s3server -H 127.0.0.1 -p 9000

State lives in memory and is gone when the process ends. Not for production:
point ``PLANZOOM_S3_ENDPOINT_URL`` at MinIO, AWS S3 or R2 there.
"""

from __future__ import annotations

import argparse

import waitress
from moto.moto_server.werkzeug_app import create_backend_app

#: Open connections served at once. Every tile worker keeps up to
#: ``PLANZOOM_UPLOAD_CONCURRENCY`` (32) keep-alive connections per upload
#: process; waitress stops accepting beyond its limit (default 100), which
#: would leave new clients waiting on idle ones.
CONNECTION_LIMIT = 2048


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m planzoom.s3server",
                                     description="moto's S3 API on one HTTP port")
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("-p", "--port", type=int, default=9000, help="TCP port")
    parser.add_argument("--threads", type=int, default=8,
                        help="worker threads handling requests (moto holds the GIL "
                             "for most of a request, so more rarely help)")
    args = parser.parse_args(argv)
    waitress.serve(create_backend_app("s3"), host=args.host, port=args.port,
                   threads=args.threads, connection_limit=CONNECTION_LIMIT,
                   asyncore_use_poll=True, ident="planzoom-s3", _quiet=True)


if __name__ == "__main__":
    main()
