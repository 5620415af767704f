"""The HTTP gateway: planzoom for browsers and HTTP clients.

A FastAPI application on uvicorn (:mod:`services.gateway.app`) that talks to
the other services over gRPC only, forwarding the caller's bearer token, and
reads tiles from the bucket. Routes: job records and their live changes
(Server-Sent Events), Deep Zoom descriptors and tiles with signed links for
clients that cannot send headers. Errors are RFC 9457 problem documents
(:mod:`services.gateway.problems`).
"""
