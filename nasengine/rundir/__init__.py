"""The run directory's bookkeeping: its layout, atomic JSON and JSON-lines records, checksummed checkpoints, the
search history, the writer's lock and the retrained networks."""
