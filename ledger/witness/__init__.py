"""A C2SP tlog-witness: remembers each log's latest checkpoint and cosigns only what extends it."""
