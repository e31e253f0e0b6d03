//! A configuration problem located for a person: which file, which line and
//! column, which key, what is wrong (std only).
//!
//! One type for every crate that reads the gateway's TOML files (the gateway
//! itself, its Modbus crate's register maps and profiles), so that each
//! subsystem validates its own section next to its code and the errors all
//! read the same: `gateway.toml:12:3: key `modbus.devices[0].unit`: ...`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::string::String;

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file (or `<built-in>` for embedded defaults).
    pub file: PathBuf,
    /// Dotted key path, e.g. `devices[1].public_key`; empty for file-level problems.
    pub key: String,
    /// What is wrong, and where useful what would be right.
    pub problem: String,
    /// Line and column (1-based) in the file, when known.
    pub at: Option<(usize, usize)>,
}

impl ConfigError {
    /// A problem at `key` of `file`.
    pub fn new(file: &Path, key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
            at: None,
        }
    }

    /// The same problem placed at a line and column.
    #[must_use]
    pub fn at(mut self, at: Option<(usize, usize)>) -> Self {
        self.at = self.at.or(at);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.at {
            write!(f, ":{line}:{col}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.problem)
        } else {
            write!(f, ": key `{}`: {}", self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}
