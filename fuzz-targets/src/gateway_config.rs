//! The gateway's config file ([`mrv_gateway::config::parse`]): TOML to a
//! validated, typed config, including the Modbus register maps, mappings,
//! diagnostics and MQTT sections. The text is parsed as if it were
//! `config/gateway.toml` of this repository, so that shipped profile names
//! and relative profile paths resolve.

use mrv_gateway::config;
use std::path::Path;

const AS_IF_AT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/gateway.toml");

/// The body of the `gateway_config` target.
pub fn parse(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let path = Path::new(AS_IF_AT);
    match config::parse(text, path) {
        Ok(_) => {}
        Err(e) => {
            assert_eq!(e.file, path, "an error names the file");
            assert!(!e.problem.trim().is_empty(), "an error says what is wrong");
            if let Some((line, col)) = e.at {
                assert!(line >= 1 && col >= 1);
                assert!(
                    line <= text.split('\n').count(),
                    "line {line} is in the text"
                );
            }
            assert!(!e.to_string().is_empty());
        }
    }
}
