"""planzoom: construction-plan PDFs to Deep Zoom Image (DZI) tile pyramids.

This package is the code every service shares: configuration, logging,
object layout and S3 access, JetStream setup, job records, the gRPC server
scaffold, DZI arithmetic, the embedded stack and the command-line client.
Each service lives in its own package under ``services/``.
"""
