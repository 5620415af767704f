"""progress: folds the stages' progress events into job records kept in the
JetStream KV bucket, serves ProgressService (WatchJob, GetJob, ListJobs), and
writes ``manifest.json`` and the plan's ``current.json`` when a job ends.
Entry point: ``python -m services.progress``."""
