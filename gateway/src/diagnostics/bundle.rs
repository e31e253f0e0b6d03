//! `diag bundle`: one tar.gz a technician can send for support, and the
//! config redaction it (and `/api/config`) relies on.
//!
//! Bundle layout (all files at the top level of the archive):
//!
//! | file | content |
//! |---|---|
//! | `README.txt` | what this is, when and from where it was taken |
//! | `config.redacted.toml` | the config file, secrets replaced by `<redacted>` |
//! | `status.json` | `/api/status` (site, buffer summary, ingest, uploads, Modbus) |
//! | `devices.json` | `/api/devices` |
//! | `buffer.json` | `/api/buffer` (depth, bytes, oldest unreported, alarm) |
//! | `uploads.json` | `/api/uploads` (reports backlog, uploader status) |
//! | `events.json` | `/api/events` (most recent) |
//! | `logs.json` | `/api/logs` (the gateway's in-memory log ring) |
//! | `metrics.txt` | `/metrics` |
//!
//! Invariants: a value whose key names a secret (password, token, secret,
//! private, passphrase, credential, or a `*key` that is not a public key)
//! never leaves [`redact_config`] in clear, at any depth, in tables and
//! arrays of tables; credentials inside URLs (`scheme://user:pass@host`)
//! are replaced too. Paths (`*_file`, `*_path`, `*_dir`) are kept: they help
//! diagnosis and hold no secret themselves.

use std::io::Write;

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Why a bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Writing the archive failed.
    #[error("cannot write the bundle: {0}")]
    Io(#[from] std::io::Error),
}

/// True when a config key names a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    if k.ends_with("_file") || k.ends_with("_path") || k.ends_with("_dir") {
        return false;
    }
    const WORDS: [&str; 8] = [
        "password",
        "passwd",
        "token",
        "secret",
        "private",
        "passphrase",
        "credential",
        "apikey",
    ];
    if WORDS.iter().any(|w| k.contains(w)) {
        return true;
    }
    (k == "key" || k.ends_with("_key") || k.ends_with("-key")) && !k.contains("public")
}

/// Replaces `user:pass@` in URLs inside `s`.
pub fn redact_url_credentials(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn redact_value(key: &str, v: &mut toml::Value) {
    if is_secret_key(key) {
        *v = toml::Value::String(REDACTED.into());
        return;
    }
    match v {
        toml::Value::Table(t) => redact_table(t),
        toml::Value::Array(a) => {
            for x in a {
                redact_value(key, x);
            }
        }
        toml::Value::String(s) if s.contains("://") => *s = redact_url_credentials(s),
        _ => {}
    }
}

fn redact_table(t: &mut toml::Table) {
    for (k, v) in t.iter_mut() {
        redact_value(k, v);
    }
}

/// The config text with every secret replaced (see the module doc). Text
/// that is not valid TOML is redacted line by line (`key = value`).
pub fn redact_config(text: &str) -> String {
    match text.parse::<toml::Table>() {
        Ok(mut t) => {
            redact_table(&mut t);
            format!(
                "# Redacted by mrv-gateway: secrets replaced by \"{REDACTED}\".\n{}",
                toml::to_string(&t).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
            )
        }
        Err(_) => text
            .lines()
            .map(|l| match l.split_once('=') {
                Some((k, _)) if is_secret_key(k.trim().trim_matches('"')) => {
                    format!("{} = \"{REDACTED}\"", k.trim_end())
                }
                _ => redact_url_credentials(l),
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// Writes `files` (name, bytes) as a gzip-compressed tar archive.
pub fn write_bundle<W: Write>(
    out: W,
    files: &[(String, Vec<u8>)],
    mtime: u64,
) -> Result<W, BundleError> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append_data(&mut h, name, bytes.as_slice())?;
    }
    let gz = tar.into_inner()?;
    Ok(gz.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_recognised_and_paths_kept() {
        for k in [
            "password",
            "token",
            "api_key",
            "client_secret",
            "private_key",
            "key",
            "Token",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "token_file",
            "ca_file",
            "public_key",
            "id",
            "key_dir",
            "listen",
            "keyword",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn nested_secrets_and_url_credentials_are_replaced() {
        let text = r#"
[site]
id = "s"
[mqtt]
password = "mqtt-pass-123"
[[mqtt.users]]
username = "dev"
password = "user-pass-456"
[diagnostics]
token = "diag-token-0123456789"
token_file = "/etc/mrv/token"
[upload]
url = "https://alice:url-pass-789@backend.invalid/api"
[[devices]]
id = "pv-01"
public_key = "AAAA"
"#;
        let r = redact_config(text);
        for secret in [
            "mqtt-pass-123",
            "user-pass-456",
            "diag-token-0123456789",
            "url-pass-789",
            "alice",
        ] {
            assert!(!r.contains(secret), "{secret} leaked:\n{r}");
        }
        assert!(r.contains("/etc/mrv/token"), "{r}");
        assert!(r.contains("backend.invalid/api"), "{r}");
        assert!(r.contains("public_key = \"AAAA\""), "{r}");
        assert!(r.matches(REDACTED).count() >= 4, "{r}");
    }

    #[test]
    fn invalid_toml_is_redacted_line_by_line() {
        let r = redact_config("[broken\npassword = \"p4ssw0rd-x\"\nurl = \"http://u:p@h/\"");
        assert!(!r.contains("p4ssw0rd-x") && !r.contains("u:p@"), "{r}");
    }

    #[test]
    fn bundle_round_trips_through_tar_gz() {
        let files = vec![
            ("a.txt".to_string(), b"hello".to_vec()),
            ("b.json".to_string(), b"{}".to_vec()),
        ];
        let bytes = write_bundle(Vec::new(), &files, 1).expect("in memory");
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let mut names = Vec::new();
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).expect("read");
            names.push((e.path().expect("path").display().to_string(), s));
        }
        assert_eq!(
            names,
            [
                ("a.txt".into(), "hello".into()),
                ("b.json".into(), "{}".into())
            ]
        );
    }
}
