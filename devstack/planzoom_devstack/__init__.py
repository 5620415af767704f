"""planzoom's development tooling, not shipped in service images: the
embedded stack (NATS JetStream, SeaweedFS as the S3 store, the services and
the gateway as local processes), a fault-injecting S3 proxy, and the
``planzoom up`` / ``planzoom demo`` commands."""
