"""planzoom's development tooling, not shipped in service images: the
embedded stack (NATS JetStream, an S3 endpoint and the four services as
local processes), moto's S3 service as that endpoint, a fault-injecting S3
proxy, and the ``planzoom up`` / ``planzoom demo`` commands."""
