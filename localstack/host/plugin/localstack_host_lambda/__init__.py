"""LocalStack runtime executor ``local``: Python Lambda functions as host processes (no Docker)."""
