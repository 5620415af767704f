"""ingest: takes plan PDFs over gRPC (IngestService), checks them, stores
them in S3 under their content hash, creates the job and publishes one page
job per page on JetStream. Entry point: ``python -m services.ingest``."""
