"""Benchmarks for issue 2: bytes on the cellular link, agent footprint, server ingest."""
