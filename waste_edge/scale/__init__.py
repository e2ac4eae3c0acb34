"""Ray Data execution of `predict` and of embedding extraction (the optional `[ray]` extra).

One job runs as Ray Data over the file list: `map_batches` with a callable class (one model per actor), its
results written in Parquet shards as they complete (resumable: a rerun skips completed shards), then merged
into the same CSV / JSONL rows or embedding cache as the single-process path. Builds on `runtime` (the
classifier, the predict plan and row writer) and imports `train` only for extraction.
"""
