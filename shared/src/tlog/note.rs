//! C2SP signed notes (`c2sp.org/signed-note`) with Ed25519 signatures:
//! the envelope of the log's checkpoints.
//!
//! ```text
//! <text, one or more lines, each ending in \n>
//! \n
//! — <key name> <base64(key id (4 bytes, big-endian) || Ed25519 signature (64 bytes))>\n
//! ```
//!
//! The signature is over the text (including its final newline). The key
//! id is `SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]`. A
//! verifier key is written `<name>+<key id, 8 hex digits>+<base64(0x01 ||
//! public key)>`, the form Go's `golang.org/x/mod/sumdb/note` reads.
//! Base64 is the standard alphabet with padding (RFC 4648 section 4).
//!
//! Opening a note ([`open`]) fails closed: it needs a signature line whose
//! name and id match the trusted key and whose signature verifies; a
//! matching line that does not verify rejects the note; lines of unknown
//! keys are ignored (they may be witnesses' cosignatures).

use super::TlogError;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signature type byte of Ed25519 in signed notes.
pub const ED25519_TYPE: u8 = 0x01;
/// Most signature lines looked at in one note.
pub const MAX_SIGNATURES: usize = 16;
/// Largest note accepted, bytes.
pub const MAX_NOTE_BYTES: usize = 16 * 1024;

/// The 4-byte key id of an Ed25519 note key.
pub fn key_id(name: &str, key: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519_TYPE]);
    h.update(key.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// A trusted note key: a name and an Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// The verifier for `key` under `name`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<NoteVerifier, TlogError> {
        if !valid_name(name) {
            return Err(TlogError::BadKey(format!("note key name {name:?}")));
        }
        Ok(NoteVerifier {
            id: key_id(name, &key),
            name: name.to_string(),
            key,
        })
    }

    /// Parses `<name>+<hex id>+<base64(0x01 || key)>`, checking the id.
    pub fn parse(s: &str) -> Result<NoteVerifier, TlogError> {
        let bad = |why: &str| TlogError::BadKey(format!("verifier key {s:?}: {why}"));
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected name+id+key"));
        };
        if id.len() != 8
            || !id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(bad("key id is not 8 lower-case hex digits"));
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| bad("key id"))?;
        let raw = STANDARD.decode(key).map_err(|_| bad("key is not base64"))?;
        let [ED25519_TYPE, rest @ ..] = raw.as_slice() else {
            return Err(bad("not an Ed25519 key (type byte 0x01)"));
        };
        let bytes: [u8; 32] = rest.try_into().map_err(|_| bad("key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not a valid Ed25519 point"))?;
        let v = NoteVerifier::new(name, key)?;
        if v.id != id {
            return Err(bad("key id does not match the name and key"));
        }
        Ok(v)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The public key.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl core::fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(ED25519_TYPE);
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, STANDARD.encode(raw))
    }
}

/// A note signing key.
#[derive(Debug, Clone)]
pub struct NoteSigner {
    verifier: NoteVerifier,
    key: SigningKey,
}

impl NoteSigner {
    /// The signer for `key` under `name`.
    pub fn new(name: &str, key: SigningKey) -> Result<NoteSigner, TlogError> {
        Ok(NoteSigner {
            verifier: NoteVerifier::new(name, key.verifying_key())?,
            key,
        })
    }

    /// Its verifier.
    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// The signature line for `text` (`— name base64\n`).
    pub fn signature_line(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.verifier.id.to_be_bytes());
        blob.extend_from_slice(&sig.to_bytes());
        format!(
            "\u{2014} {} {}\n",
            self.verifier.name,
            STANDARD.encode(blob)
        )
    }

    /// `text` signed: the text, a blank line, the signature line. `text`
    /// must end in a newline and hold no control characters but newlines.
    pub fn sign(&self, text: &str) -> Result<String, TlogError> {
        check_text(text)?;
        let mut out = String::with_capacity(text.len() + 120);
        out.push_str(text);
        out.push('\n');
        out.push_str(&self.signature_line(text));
        Ok(out)
    }
}

fn check_text(text: &str) -> Result<(), TlogError> {
    if !text.ends_with('\n') {
        return Err(TlogError::Malformed(String::from(
            "note text does not end in a newline",
        )));
    }
    if text.chars().any(|c| c != '\n' && c.is_control()) {
        return Err(TlogError::Malformed(String::from(
            "note holds a control character",
        )));
    }
    Ok(())
}

/// The text of `note` (with its final newline) WITHOUT checking any
/// signature: for a holder who has no log key yet, who can still check
/// proofs against the root it names, but must not trust the note.
pub fn text_unverified(note: &str) -> Result<&str, TlogError> {
    let split = note.rfind("\n\n").ok_or_else(|| {
        TlogError::Malformed(String::from(
            "signed note: no blank line before the signatures",
        ))
    })?;
    Ok(&note[..split + 1])
}

/// Verifies `note` with the trusted `verifier` and returns its text (with
/// its final newline).
pub fn open<'a>(note: &'a str, verifier: &NoteVerifier) -> Result<&'a str, TlogError> {
    let malformed = |why: &str| TlogError::Malformed(format!("signed note: {why}"));
    if note.len() > MAX_NOTE_BYTES {
        return Err(malformed("too large"));
    }
    if note.chars().any(|c| c != '\n' && c.is_control()) {
        return Err(malformed("control character"));
    }
    if !note.ends_with('\n') {
        return Err(malformed("does not end in a newline"));
    }
    // The text ends at the last blank line.
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| malformed("no blank line before the signatures"))?;
    let text = &note[..split + 1];
    let sigs = &note[split + 2..];
    let mut verified = false;
    for (n, line) in sigs.lines().enumerate() {
        if n >= MAX_SIGNATURES {
            return Err(malformed("too many signatures"));
        }
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or_else(|| malformed("signature line does not start with an em dash"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| malformed("signature line without a signature"))?;
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| malformed("signature is not base64"))?;
        if blob.len() < 4 {
            return Err(malformed("signature shorter than its key id"));
        }
        let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
        if name != verifier.name || id != verifier.id {
            continue;
        }
        let sig = Signature::from_slice(&blob[4..]).map_err(|_| TlogError::BadSignature)?;
        verifier
            .key
            .verify(text.as_bytes(), &sig)
            .map_err(|_| TlogError::BadSignature)?;
        verified = true;
    }
    if verified {
        Ok(text)
    } else {
        Err(TlogError::UnknownSigner(verifier.name.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // golang.org/x/mod/sumdb/note's published example (note_test.go).
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SEED_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn go_signer() -> NoteSigner {
        let raw = STANDARD.decode(SEED_B64).expect("b64");
        let seed: [u8; 32] = raw[1..].try_into().expect("32 bytes");
        NoteSigner::new("PeterNeumann", SigningKey::from_bytes(&seed)).expect("signer")
    }

    #[test]
    fn signing_reproduces_the_go_reference_note_byte_for_byte() {
        let s = go_signer();
        assert_eq!(s.verifier().to_string(), VKEY);
        let note = s.sign(TEXT).expect("sign");
        assert_eq!(note, alloc::format!("{TEXT}\n{SIG}"));
        let v = NoteVerifier::parse(VKEY).expect("parse");
        assert_eq!(open(&note, &v), Ok(TEXT));
    }

    #[test]
    fn a_changed_text_or_signature_is_rejected() {
        let v = NoteVerifier::parse(VKEY).expect("parse");
        let note = alloc::format!("{TEXT}\n{SIG}");
        let changed = note.replace("cryptography", "cryptographY");
        assert_eq!(open(&changed, &v), Err(TlogError::BadSignature));
        let other = NoteSigner::new("PeterNeumann", SigningKey::from_bytes(&[7; 32])).expect("s");
        let by_other = other.sign(TEXT).expect("sign");
        // Same name, different key id: not our key, so nothing verified.
        assert_eq!(
            open(&by_other, &v),
            Err(TlogError::UnknownSigner(String::from("PeterNeumann")))
        );
        // An extra signature from an unknown key is ignored.
        let both = alloc::format!("{TEXT}\n{}{SIG}", other.signature_line(TEXT));
        assert_eq!(open(&both, &v), Ok(TEXT));
    }

    #[test]
    fn mangled_verifier_keys_are_refused() {
        assert!(NoteVerifier::parse(VKEY).is_ok());
        for bad in [
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+AhRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3",
            "",
        ] {
            assert!(NoteVerifier::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_notes_say_why() {
        let v = NoteVerifier::parse(VKEY).expect("parse");
        for bad in [
            "no blank line\n\u{2014} PeterNeumann AAAA\n",
            "text\n\nnot a signature line\n",
            "text\n\n\u{2014} PeterNeumann AAAA",
            "te\u{7}xt\n\n\u{2014} PeterNeumann AAAA\n",
        ] {
            assert!(
                matches!(open(bad, &v), Err(TlogError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
