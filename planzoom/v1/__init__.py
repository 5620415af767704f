"""Generated protobuf and gRPC code for planzoom.v1 (built by `make proto`)."""
