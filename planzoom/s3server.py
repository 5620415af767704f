"""The embedded S3 endpoint: moto's S3 service alone, over HTTP.

``python -m moto.server`` serves every AWS service moto emulates. For each
request it works out which one is meant, under one process-wide lock, by
parsing the request's signature and scanning moto's package directory: on
this machine that cost about 40 % of moto's CPU per PUT and capped it near
340 PUT/s however many clients it had. planzoom only speaks S3 to it, so this
serves moto's S3 application directly (the one moto's dispatcher would pick),
with werkzeug's threaded server and without a log line per request. Same
S3 API and behaviour; roughly 1.5x the PUT rate (``make bench`` measures the
endpoint it runs against).

    python -m planzoom.s3server -H 127.0.0.1 -p 9000

State lives in memory and is gone when the process ends. Not for production:
point ``PLANZOOM_S3_ENDPOINT_URL`` at MinIO, AWS S3 or R2 there.
"""

from __future__ import annotations

import argparse
import logging

from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m planzoom.s3server",
                                     description="moto's S3 API on one HTTP port")
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("-p", "--port", type=int, default=9000, help="TCP port")
    parser.add_argument("--log-requests", action="store_true",
                        help="log one line per request (off: it costs CPU on every PUT)")
    args = parser.parse_args(argv)
    if not args.log_requests:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    run_simple(args.host, args.port, create_backend_app("s3"), threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
