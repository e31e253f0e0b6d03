//! upload (being built)
