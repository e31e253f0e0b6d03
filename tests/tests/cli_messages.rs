//! What a technician reads from the command line when something is wrong:
//! the real binary (`mrv-e2e-gateway`, the same code as `mrv-gateway`) run
//! as a child process, its exit status, stdout and stderr checked.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn gateway(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mrv-e2e-gateway"));
    c.args(args)
        .env_remove("MRV_CONFIG")
        .env_remove("MRV_DIAG_URL");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the gateway binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const BASE: &str = "[site]\nid = \"s\"\n[gateway]\nid = \"g\"\ndata_dir = \"data\"\n\
                    [mqtt]\nlisten = \"127.0.0.1:0\"\n[diagnostics]\nlisten = \"127.0.0.1:0\"\n";

const REPORT: &str = "[[devices]]\nid = \"pv-1\"\nkind = \"solar_meter\"\n\
    channels = [{ id = \"energy\", quantity = \"energy\", kind = \"counter\" }]\n\
    [report]\nperiod_minutes = 60\n\
    [report.calculations.pv]\nmethodology = \"solar_pv\"\n\
    inputs = [{ role = \"generation\", device = \"pv-1\", channel = \"energy\" }]\n\
    [report.calculations.pv.parameters.ef]\nvalue = \"0.5\"\nunit = \"tCO2/MWh\"\nsource = \"t\"\n";

fn write_config(dir: &Path, text: &str) -> String {
    let p = dir.join("gateway.toml");
    std::fs::write(&p, text).expect("write config");
    p.display().to_string()
}

#[test]
fn a_missing_signing_key_is_found_by_check_config_and_run_says_it_once_with_exit_78() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &format!("{BASE}{REPORT}"));
    for cmd in ["check-config", "run"] {
        let o = gateway(&[cmd, "--config", &cfg], &[]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(78), "{cmd}: {out}{err}");
        assert!(
            err.contains(
                "keys/gateway.key does not exist: create it with `mrv-gateway keygen --out "
            ),
            "{cmd}: {err}"
        );
        assert_eq!(err.matches("does not exist").count(), 1, "said once: {err}");
        assert!(!out.contains("OK"), "{out}");
    }
    let keys = dir.path().join("data/keys");
    let o = gateway(
        &[
            "keygen",
            "--out",
            &keys.display().to_string(),
            "--name",
            "gateway",
        ],
        &[],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let o = gateway(&["check-config", "--config", &cfg], &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("pv (solar_pv)"), "{out}");
    assert!(
        out.contains("generation    <- pv-1/energy (energy)"),
        "{out}"
    );
    assert!(!out.contains("SolarPv"), "{out}");
}

#[test]
fn config_errors_say_line_column_did_you_mean_and_plain_sentences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &format!("{BASE}[buffer]\nmax_byte = 5000000\n"));
    let o = gateway(&["check-config", "--config", &cfg], &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(err.contains("gateway.toml:11:1: "), "{err}");
    assert!(err.contains("did you mean `max_bytes`?"), "{err}");
    let cfg = write_config(
        dir.path(),
        &format!("{BASE}[buffer]\nmax_commit_frames = \"65536\"\n"),
    );
    let (_, err) = text(&gateway(&["check-config", "--config", &cfg], &[]));
    assert!(
        err.contains("gateway.toml:11:21: key `buffer.max_commit_frames`: must be a whole number of 0 or more, but it is text in quotes (\"65536\"): write 65536 without the quotes"),
        "{err}"
    );
    assert!(!err.contains("invalid type"), "{err}");
}

#[test]
fn a_missing_config_is_one_line_without_a_backtrace_even_with_rust_backtrace() {
    let o = gateway(
        &["check-config", "--config", "/nonexistent/gateway.toml"],
        &[("RUST_BACKTRACE", "1")],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: /nonexistent/gateway.toml: cannot read the file"),
        "{err}"
    );
    assert!(
        !err.contains("Stack backtrace") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn status_reads_url_and_token_from_the_config() {
    // Nothing listens on the port the config names: the message names it,
    // which shows the URL came from the config, not the 8080 default.
    let port = mrv_e2e::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[site]\nid = \"s\"\n[gateway]\nid = \"g\"\ndata_dir = \"data\"\n\
             [diagnostics]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    for cmd in [&["status"][..], &["devices"], &["diag", "bundle"]] {
        let mut args = cmd.to_vec();
        args.extend(["--config", &cfg]);
        let (_, err) = text(&gateway(&args, &[]));
        assert!(
            err.contains(&format!(
                "cannot reach the gateway at http://127.0.0.1:{port}/api/"
            )),
            "{cmd:?}: {err}"
        );
    }
}

#[test]
fn logs_carry_no_colour_codes_when_not_on_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mqtt = format!(
        "listen = \"127.0.0.1:{}\"\n[diagnostics]",
        mrv_e2e::free_port()
    );
    let cfg = write_config(
        dir.path(),
        &BASE.replacen("listen = \"127.0.0.1:0\"\n[diagnostics]", &mqtt, 1),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mrv-e2e-gateway"))
        .args(["run", "--config", &cfg])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            all.push_str(&line);
            all.push('\n');
            if line.contains("gateway ready") {
                let _ = tx.send(all.clone());
            }
        }
        let _ = tx.send(all);
    });
    let log = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the gateway logs that it is ready");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(log.contains("gateway ready"), "{log}");
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in piped logs: {log:?}"
    );
}
