"""planzoom's command-line client and its gRPC client library
(:class:`planzoom_cli.client.Client`)."""
