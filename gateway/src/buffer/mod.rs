//! buffer (being built)
