"""planzoom's runtime library: what every service image installs and every
service shares (settings, logs, metrics, the error hierarchy and the gRPC
boundary, the server scaffold, S3, JetStream, job records, DZI arithmetic,
ids and object keys, the worker-process sandbox). It imports nothing from
``services/``, the CLI or the development tooling; docs/architecture.md
draws the layers.
"""
