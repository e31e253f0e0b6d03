//! clock (being built)
