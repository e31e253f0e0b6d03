//! Pre-flight checks: everything `run` needs from a valid config that can
//! be checked without running it: the data directory can be created or
//! written, the buffer directory is a buffer (or absent), the report signing
//! key exists, is private (mode 0600) and parses, serial ports of RTU buses
//! exist, and the listen ports are free.
//!
//! `check-config` prints every finding; `run` refuses to start on an
//! [`Severity::Error`] with the same sentence (and a hint such as "create it
//! with `mrv-gateway keygen`"), so a systemd unit does not loop on a
//! problem a restart cannot fix.

use super::GatewayConfig;
use std::path::{Path, PathBuf};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `run` would fail.
    Error,
    /// `run` starts, but something will not work until it is fixed (a
    /// serial port not plugged in, a port taken by a running gateway).
    Warning,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// What it is about (`report.key_file`, `gateway.data_dir`).
    pub key: String,
    /// What is wrong, and what to do.
    pub problem: String,
}

fn finding(severity: Severity, key: &str, problem: String) -> Finding {
    Finding {
        severity,
        key: key.into(),
        problem,
    }
}

/// The report signing key path of a config (absolute, or under `data_dir`).
pub fn report_key_path(c: &GatewayConfig) -> Option<PathBuf> {
    c.report.as_ref().map(|r| {
        if r.key_file.is_absolute() {
            r.key_file.clone()
        } else {
            c.data_dir.join(&r.key_file)
        }
    })
}

fn writable_dir(dir: &Path) -> Result<(), String> {
    tempfile::tempfile_in(dir)
        .map(drop)
        .map_err(|e| format!("{} is not writable by this user: {e}", dir.display()))
}

fn check_data_dir(c: &GatewayConfig, out: &mut Vec<Finding>) {
    let d = &c.data_dir;
    if d.is_dir() {
        if let Err(e) = writable_dir(d) {
            out.push(finding(Severity::Error, "gateway.data_dir", e));
        }
        return;
    }
    if d.exists() {
        out.push(finding(
            Severity::Error,
            "gateway.data_dir",
            format!("{} exists but is not a directory", d.display()),
        ));
        return;
    }
    // Created at start: the nearest existing ancestor must be writable.
    let mut a = d.parent();
    while let Some(p) = a {
        if p.as_os_str().is_empty() {
            a = Some(Path::new("."));
            continue;
        }
        if p.is_dir() {
            if let Err(e) = writable_dir(p) {
                out.push(finding(
                    Severity::Error,
                    "gateway.data_dir",
                    format!("{} does not exist and cannot be created: {e}", d.display()),
                ));
            }
            return;
        }
        a = p.parent();
    }
}

fn check_buffer(c: &GatewayConfig, out: &mut Vec<Finding>) {
    let b = &c.buffer.path;
    if !b.exists() {
        return;
    }
    let is_sled = b.join("conf").is_file() && b.join("db").is_file();
    let empty = std::fs::read_dir(b)
        .map(|mut r| r.next().is_none())
        .unwrap_or(false);
    if !is_sled && !empty {
        out.push(finding(
            Severity::Error,
            "gateway.data_dir",
            format!(
                "{} exists but holds no buffer (no sled `conf` and `db`): is data_dir pointing at the right directory?",
                b.display()
            ),
        ));
    }
}

fn check_report_key(c: &GatewayConfig, out: &mut Vec<Finding>) {
    let Some(path) = report_key_path(c) else {
        return;
    };
    if !path.exists() {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("gateway");
        out.push(finding(
            Severity::Error,
            "report.key_file",
            format!(
                "the report signing key {} does not exist: create it with \
                 `mrv-gateway keygen --out {} --name {name}` (as the user the gateway runs as), \
                 then give {name}.pub.jwk to the MRV backend",
                path.display(),
                dir.display()
            ),
        ));
        return;
    }
    if let Err(e) = crate::keys::load_signing_key(&path) {
        out.push(finding(Severity::Error, "report.key_file", e.to_string()));
    }
}

fn check_serial_ports(c: &GatewayConfig, out: &mut Vec<Finding>) {
    for (i, b) in c.modbus.buses.iter().enumerate() {
        if !b.path.exists() {
            out.push(finding(
                Severity::Warning,
                &format!("modbus.buses[{i}].path"),
                format!(
                    "serial port {} does not exist (adapter not plugged in?); its devices will not be polled until it appears",
                    b.path.display()
                ),
            ));
        }
    }
}

fn check_port(addr: std::net::SocketAddr, key: &str, out: &mut Vec<Finding>) {
    if addr.port() == 0 {
        return;
    }
    if let Err(e) = std::net::TcpListener::bind(addr) {
        out.push(finding(
            Severity::Warning,
            key,
            format!("cannot listen on {addr} now ({e}): is a gateway already running?"),
        ));
    }
}

/// Every finding for `c`, errors first.
pub fn check(c: &GatewayConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    check_data_dir(c, &mut out);
    check_buffer(c, &mut out);
    check_report_key(c, &mut out);
    check_serial_ports(c, &mut out);
    if c.mqtt.mode == super::BrokerMode::Embedded {
        check_port(c.mqtt.listen, "mqtt.listen", &mut out);
    }
    if c.diagnostics.enabled {
        check_port(c.diagnostics.listen, "diagnostics.listen", &mut out);
    }
    out.sort_by_key(|f| f.severity != Severity::Error);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, extra: &str) -> GatewayConfig {
        let path = dir.join("gateway.toml");
        let text = format!(
            "[site]\nid = \"s\"\n[gateway]\nid = \"g\"\ndata_dir = \"data\"\n\
             [mqtt]\nlisten = \"127.0.0.1:0\"\n[diagnostics]\nlisten = \"127.0.0.1:0\"\n{extra}"
        );
        std::fs::write(&path, &text).expect("write");
        super::super::load(&path).expect("valid")
    }

    const REPORT: &str = "[[devices]]\nid = \"pv-1\"\nkind = \"solar_meter\"\n\
        channels = [{ id = \"energy\", quantity = \"energy\", kind = \"counter\" }]\n\
        [report]\nperiod_minutes = 60\n\
        [report.calculations.pv]\nmethodology = \"solar_pv\"\n\
        inputs = [{ role = \"generation\", device = \"pv-1\", channel = \"energy\" }]\n\
        [report.calculations.pv.parameters.ef]\nvalue = \"0.5\"\nunit = \"tCO2/MWh\"\nsource = \"t\"\n";

    #[test]
    fn a_missing_report_key_is_an_error_with_the_keygen_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), REPORT);
        let f = check(&c);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].key, "report.key_file");
        assert!(f[0].problem.contains("mrv-gateway keygen --out "), "{f:?}");
        assert!(f[0].problem.contains("--name gateway"), "{f:?}");
        // With the key in place, nothing is wrong.
        crate::keys::generate(&c.data_dir.join("keys"), "gateway").expect("keygen");
        assert!(check(&c).is_empty(), "{:?}", check(&c));
    }

    #[test]
    fn an_unreadable_key_or_a_data_dir_that_is_a_file_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), REPORT);
        let key = report_key_path(&c).expect("key path");
        std::fs::create_dir_all(key.parent().expect("dir")).expect("mkdir");
        std::fs::write(&key, "not a jwk").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let f = check(&c);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].key, "report.key_file");
        let c = config(dir.path(), "");
        std::fs::remove_dir_all(&c.data_dir).expect("rm");
        std::fs::write(&c.data_dir, "").expect("a file");
        let f = check(&c);
        assert!(
            f.iter()
                .any(|x| x.key == "gateway.data_dir" && x.problem.contains("not a directory")),
            "{f:?}"
        );
    }

    #[test]
    fn a_busy_port_is_a_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = busy.local_addr().expect("addr").port();
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            format!(
                "[site]\nid = \"s\"\n[gateway]\nid = \"g\"\ndata_dir = \"data\"\n\
                 [mqtt]\nlisten = \"127.0.0.1:0\"\n[diagnostics]\nlisten = \"127.0.0.1:{port}\"\n"
            ),
        )
        .expect("write");
        let c = super::super::load(&path).expect("valid");
        let f = check(&c);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(f[0].key, "diagnostics.listen");
    }
}
