//! ingest (being built)
