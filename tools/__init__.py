"""Developer tooling: local run, table setup, packaging and deploy. Never shipped to Lambda."""
