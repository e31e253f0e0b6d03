//! C2SP `tlog-checkpoint` note text: the log's signed tree head.
//!
//! ```text
//! <origin>\n
//! <tree size, decimal, no leading zeros>\n
//! <root hash, standard base64 of 32 bytes>\n
//! ```
//!
//! signed as a [`super::note`] whose key name is the origin. The backend
//! writes no extension lines; a parsed checkpoint keeps any it finds, but
//! they carry no meaning here.

use super::TlogError;
use super::note::{NoteSigner, NoteVerifier, open};
use crate::report::merkle::Hash;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A tree head: which log, how many entries, which root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity (also its note key name).
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// RFC 6962 root hash.
    pub root: Hash,
    /// Extension lines (none written by this backend).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text (each line ending in `\n`).
    pub fn text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Signs the checkpoint (the signer's name must be the origin).
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, TlogError> {
        if signer.verifier().name() != self.origin {
            return Err(TlogError::BadKey(format!(
                "key name {:?} is not the origin {:?}",
                signer.verifier().name(),
                self.origin
            )));
        }
        signer.sign(&self.text())
    }

    /// Parses a note text.
    pub fn parse_text(text: &str) -> Result<Checkpoint, TlogError> {
        let bad = |why: &str| TlogError::Malformed(format!("checkpoint: {why}"));
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("text does not end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad("no origin"))?;
        let size = lines.next().ok_or_else(|| bad("no tree size"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad("tree size is not a decimal without leading zeros"));
        }
        let size: u64 = size.parse().map_err(|_| bad("tree size out of range"))?;
        let root = lines.next().ok_or_else(|| bad("no root hash"))?;
        let root: Hash = STANDARD
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("root hash is not base64 of 32 bytes"))?;
        let extensions: Vec<String> = lines.map(str::to_string).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions,
        })
    }

    /// Verifies a signed checkpoint with the log's key and parses it; the
    /// origin must be the key's name.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Checkpoint, TlogError> {
        let c = Checkpoint::parse_text(open(note, verifier)?)?;
        if c.origin != verifier.name() {
            return Err(TlogError::OriginMismatch {
                expected: verifier.name().to_string(),
                found: c.origin,
            });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn a_checkpoint_round_trips_through_its_signed_note() {
        let signer =
            NoteSigner::new("mrv.example/log", SigningKey::from_bytes(&[3; 32])).expect("s");
        let c = Checkpoint {
            origin: String::from("mrv.example/log"),
            size: 20_852_163,
            root: [0xab; 32],
            extensions: Vec::new(),
        };
        let note = c.sign(&signer).expect("sign");
        assert!(note.starts_with(
            "mrv.example/log\n20852163\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n\n\u{2014} mrv.example/log "
        ));
        assert_eq!(Checkpoint::open(&note, signer.verifier()), Ok(c));
    }

    #[test]
    fn bad_sizes_and_roots_are_malformed() {
        for text in [
            "o\n01\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n",
            "o\n-1\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n",
            "o\n1\nq6ur\n",
            "o\n1\n",
            "\n1\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n",
        ] {
            assert!(Checkpoint::parse_text(text).is_err(), "{text:?}");
        }
        let c = Checkpoint::parse_text("o\n0\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\next\n")
            .expect("ok");
        assert_eq!((c.size, c.extensions.len()), (0, 1));
    }

    #[test]
    fn a_checkpoint_of_another_origin_is_refused_even_if_signed() {
        let signer =
            NoteSigner::new("mrv.example/log", SigningKey::from_bytes(&[3; 32])).expect("s");
        let note = signer
            .sign("other.example/log\n1\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n")
            .expect("sign");
        assert!(matches!(
            Checkpoint::open(&note, signer.verifier()),
            Err(TlogError::OriginMismatch { .. })
        ));
    }
}
