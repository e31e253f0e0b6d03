//! firmware
#![no_std]
