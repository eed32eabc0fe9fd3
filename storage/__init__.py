"""Every SQL statement hedgeflow runs: DuckDB schema, batched writer, queries the views need."""
