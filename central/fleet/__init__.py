"""Fleet status: edge nodes heartbeat what they serve."""
