//! diagnostics (being built)
