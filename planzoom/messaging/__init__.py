"""NATS JetStream, as every planzoom service uses it.

- :mod:`~planzoom.messaging.topology`: the streams, consumers and KV bucket,
  their names and their setup;
- :mod:`~planzoom.messaging.connection`: connecting and draining;
- :mod:`~planzoom.messaging.publishing`: durable, deduplicated publishing
  and the page jobs of a job;
- :mod:`~planzoom.messaging.events`: progress events and dead letters;
- :mod:`~planzoom.messaging.worker`: the pull-consumer loop every consumer
  runs (ack, in-progress heartbeats, backoff, dead letters).
"""
