//! modbus (being built)
