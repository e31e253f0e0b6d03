//! broker (being built)
