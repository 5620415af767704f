"""Timestamps for records and events."""

from google.protobuf.timestamp_pb2 import Timestamp


def now_ts() -> Timestamp:
    """The current UTC time as a protobuf Timestamp."""
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts
