//! runtime (being built)
