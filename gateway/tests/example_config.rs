//! The example configs in `config/` stay valid: what we ship must load.

use std::path::Path;

#[test]
fn every_example_config_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config/ exists") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("gateway") && name.ends_with(".toml") {
            if let Err(e) = mrv_gateway::config::load(&path) {
                panic!("{e}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 1, "no gateway*.toml found in config/");
}

#[test]
fn config_errors_name_file_key_and_problem() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[site]\nid = \"s\"\n[gateway]\nid = \"g\"\ndata_dir = \"d\"\n[mqtt]\nlisten = \"0.0.0.0:1883\"\n",
    )
    .expect("write");
    let e =
        mrv_gateway::config::load(&path).expect_err("non-loopback broker without users is refused");
    let text = e.to_string();
    assert!(
        text.contains("bad.toml") && text.contains("mqtt.users"),
        "{text}"
    );
}
