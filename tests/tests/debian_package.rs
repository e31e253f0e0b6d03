//! The Debian package (`scripts/build-deb.sh`), built from the debug binary
//! this test suite already has (the same code as the release binary; CI
//! compiles no release build for this), then:
//! - inspected with `dpkg-deb` (files, modes, conffiles, control) and
//!   `lintian` (no errors; every override carries its reason);
//! - installed into a throwaway root with `dpkg --root`, maintainer scripts
//!   run chrootless under `DPKG_ROOT` (never touching this machine): the
//!   `mrv-gateway` user exists there, data and config have their modes, the
//!   packaged binary runs;
//! - upgraded there to a newer version: the buffer, the keys, the reports
//!   and the admin's edit of the conffile are all still there.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn build(version: &str, out: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-deb.sh");
    let text = run(Command::new("bash").arg(script).args([
        "--binary",
        env!("CARGO_BIN_EXE_mrv-e2e-gateway"),
        "--version",
        version,
        "--out",
        &out.display().to_string(),
        "--fast",
    ]));
    PathBuf::from(text.lines().last().expect("the .deb path").trim())
}

/// `dpkg` on the throwaway root only: its own database, log and paths.
fn dpkg(root: &Path, args: &[&str]) -> String {
    let admin = root.join("var/lib/dpkg");
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg(format!("--admindir={}", admin.display()))
        .arg(format!("--log={}", root.join("dpkg.log").display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-confold",
            "--no-triggers",
        ])
        .args(args))
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).expect("exists").mode() & 0o7777
}

fn owner(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).expect("exists");
    (m.uid(), m.gid())
}

fn id_in(root: &Path, file: &str, name: &str) -> u32 {
    let text = std::fs::read_to_string(root.join("etc").join(file)).expect("passwd/group");
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| f[2].parse().expect("numeric id"))
        })
        .unwrap_or_else(|| panic!("no {name} in {file}:\n{text}"))
}

#[test]
fn the_package_installs_into_a_throwaway_root_and_an_upgrade_keeps_the_data() {
    for tool in ["dpkg-deb", "lintian", "systemd-sysusers"] {
        if !mrv_e2e::require_tool(tool) {
            return;
        }
    }
    let work = tempfile::tempdir().expect("tempdir");
    let v1 = build("0.1.0~test1", &work.path().join("v1"));
    let v2 = build("0.1.0~test2", &work.path().join("v2"));

    // What is in it.
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&v1));
    for f in [
        "./usr/bin/mrv-gateway",
        "./lib/systemd/system/mrv-gateway.service",
        "./usr/lib/sysusers.d/mrv-gateway.conf",
        "./etc/mrv-gateway/gateway.toml",
        "./usr/share/doc/mrv-gateway/copyright",
        "./usr/share/doc/mrv-gateway/examples/profiles/sunspec.toml",
        "./var/lib/mrv-gateway/",
    ] {
        assert!(contents.contains(f), "{f} missing:\n{contents}");
    }
    assert!(
        contents.contains("drwx------ root/root         0")
            && contents.contains("-rw-r----- root/root"),
        "data dir 0700, config 0640:\n{contents}"
    );
    let conffiles = run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&v1)
        .arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/mrv-gateway/gateway.toml");
    let lint = Command::new("lintian")
        .args(["--tag-display-limit", "0", "--display-info"])
        .arg(&v1)
        .output()
        .expect("lintian runs");
    let report = String::from_utf8_lossy(&lint.stdout).into_owned();
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{report}");

    // A throwaway root with an empty dpkg database.
    let root = work.path().join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("status");
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\ndialout:x:20:\n").expect("group");
    let first = dpkg(&root, &["--install", &v1.display().to_string()]);
    assert!(first.contains("installed, not started"), "{first}");
    assert!(
        first.contains("mrv-gateway keygen --out /var/lib/mrv-gateway/keys"),
        "{first}"
    );

    let uid = id_in(&root, "passwd", "mrv-gateway");
    let gid = id_in(&root, "group", "mrv-gateway");
    assert_ne!(uid, 0);
    let group = std::fs::read_to_string(root.join("etc/group")).expect("group");
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("dialout:") && l.ends_with("mrv-gateway")),
        "the service user may open serial ports:\n{group}"
    );
    let data = root.join("var/lib/mrv-gateway");
    assert_eq!(owner(&data), (uid, gid));
    assert_eq!(mode(&data), 0o700);
    let conf = root.join("etc/mrv-gateway/gateway.toml");
    assert_eq!(owner(&conf), (0, gid));
    assert_eq!(mode(&conf), 0o640);
    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/mrv-gateway.service")).expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/bin/mrv-gateway run"),
        "{unit}"
    );
    assert!(unit.contains("RestartPreventExitStatus=78"), "{unit}");
    assert!(unit.contains("User=mrv-gateway"), "{unit}");
    let bin = root.join("usr/bin/mrv-gateway");
    let version = run(Command::new(&bin).arg("--version"));
    assert!(version.contains("mrv-gateway"), "{version}");

    // A site in use: a key made by the packaged binary, a buffer, reports,
    // and the admin's edit of the config.
    run(Command::new(&bin).args([
        "keygen",
        "--out",
        &data.join("keys").display().to_string(),
        "--name",
        "gateway",
    ]));
    std::fs::create_dir_all(data.join("buffer")).expect("mkdir");
    std::fs::write(data.join("buffer/db"), b"buffer bytes").expect("buffer");
    std::fs::create_dir_all(data.join("reports")).expect("mkdir");
    std::fs::write(data.join("reports/000001.jws"), b"a signed report").expect("report");
    let edited = std::fs::read_to_string(&conf).expect("conf") + "\n# edited by the site admin\n";
    std::fs::write(&conf, &edited).expect("edit");
    let key = std::fs::read(data.join("keys/gateway.key")).expect("key");

    // The upgrade keeps all of it.
    let second = dpkg(&root, &["--install", &v2.display().to_string()]);
    assert!(
        !second.contains("installed, not started"),
        "an upgrade says nothing: {second}"
    );
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).expect("status");
    assert!(status.contains("Version: 0.1.0~test2"), "{status}");
    assert_eq!(
        std::fs::read(data.join("keys/gateway.key")).expect("key"),
        key
    );
    assert_eq!(
        std::fs::read(data.join("buffer/db")).expect("buffer"),
        b"buffer bytes"
    );
    assert_eq!(
        std::fs::read(data.join("reports/000001.jws")).expect("report"),
        b"a signed report"
    );
    assert_eq!(std::fs::read_to_string(&conf).expect("conf"), edited);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(id_in(&root, "passwd", "mrv-gateway"), uid, "the same user");

    // Removing the package keeps the data too (and so does purging).
    dpkg(&root, &["--purge", "mrv-gateway"]);
    assert!(!bin.exists());
    assert_eq!(
        std::fs::read(data.join("keys/gateway.key")).expect("key"),
        key
    );
}
