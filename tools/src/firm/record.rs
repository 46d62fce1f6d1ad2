//! What the firm bucket holds: one [`FirmRecord`] per key, JSON, and the
//! signature that makes a reset a reset.
//!
//! A trip needs no credential: pulling the cord must be easy. A reset carries
//! an ed25519 signature (an nkey, NATS's own key format) by the risk role over
//! the record's fields, including the revision the operator saw; relays honour
//! only resets signed by a key in their trusted list, and only when that
//! revision is the one the reset replaced (so an old signed reset copied onto
//! a newer trip is not a reset). Anything else that says "normal" — an
//! unsigned or badly signed record, a deleted key, an unreadable value — is
//! held as KILL.

use killswitch::control::Mode;
use serde::{Deserialize, Serialize};

/// Version of the record layout; a relay refuses (holds KILL on) a record of
/// a version it does not know.
pub const RECORD_VERSION: u32 = 1;

/// What a write to a key did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Tripped (or escalated, or repeated).
    Trip,
    /// Reset by the risk role.
    Reset,
}

/// The mode names of the control block, for JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirmMode {
    /// Nothing tripped.
    Normal,
    /// Only position-reducing orders.
    ReduceOnly,
    /// No new orders; resting orders stay.
    HaltNew,
    /// No new orders; every open order is cancelled.
    Kill,
}

impl From<Mode> for FirmMode {
    fn from(m: Mode) -> FirmMode {
        match m {
            Mode::Normal => FirmMode::Normal,
            Mode::ReduceOnly => FirmMode::ReduceOnly,
            Mode::HaltNew => FirmMode::HaltNew,
            Mode::Kill => FirmMode::Kill,
        }
    }
}

impl From<FirmMode> for Mode {
    fn from(m: FirmMode) -> Mode {
        match m {
            FirmMode::Normal => Mode::Normal,
            FirmMode::ReduceOnly => Mode::ReduceOnly,
            FirmMode::HaltNew => Mode::HaltNew,
            FirmMode::Kill => Mode::Kill,
        }
    }
}

/// The value of one key (`firm`, `desk.<name>`, `host.<name>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmRecord {
    /// Layout version ([`RECORD_VERSION`]).
    pub v: u32,
    /// The key this record was written for (a record copied to another key
    /// is refused).
    pub key: String,
    /// Trip or reset.
    pub action: Action,
    /// Mode in force after this write (`normal` for a reset).
    pub mode: FirmMode,
    /// Changes of this key so far: the previous record's + 1.
    pub generation: u64,
    /// Why.
    pub reason: String,
    /// Who: user, uid and host of the writer.
    pub who: String,
    /// When, Unix ns.
    pub when_ns: u64,
    /// A random id of the write, so a writer that retried after a lost
    /// answer recognises its own record.
    pub write_id: String,
    /// Reset only: the revision of the key the operator saw (and replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_seen: Option<u64>,
    /// Reset only: public nkey of the risk role that signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Reset only: ed25519 signature of [`FirmRecord::signed_bytes`], hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl FirmRecord {
    /// Parses a stored value; the error says what is wrong with it.
    pub fn decode(bytes: &[u8]) -> Result<FirmRecord, String> {
        let r: FirmRecord = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a firm record ({e}); {} bytes", bytes.len()))?;
        if r.v != RECORD_VERSION {
            return Err(format!(
                "record version {} is not {RECORD_VERSION}: upgrade this killswitch",
                r.v
            ));
        }
        Ok(r)
    }

    /// The JSON stored in the bucket.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a firm record serialises")
    }

    /// The bytes a reset signature covers: every field except the signature,
    /// in a fixed order, with the bucket name, so a signature made for one
    /// bucket, key or revision is worth nothing anywhere else.
    pub fn signed_bytes(&self, bucket: &str) -> Vec<u8> {
        format!(
            "killswitch firm reset v{}\nbucket={bucket}\nkey={}\naction={:?}\nmode={:?}\ngeneration={}\nrevision_seen={}\nreason={}\nwho={}\nwhen_ns={}\nwrite_id={}\nsigner={}\n",
            self.v,
            self.key,
            self.action,
            self.mode,
            self.generation,
            self.revision_seen.unwrap_or(0),
            self.reason,
            self.who,
            self.when_ns,
            self.write_id,
            self.signer.as_deref().unwrap_or(""),
        )
        .into_bytes()
    }

    /// Signs a reset with the risk role's key pair (sets `signer` and `signature`).
    pub fn sign(&mut self, bucket: &str, risk: &nkeys::KeyPair) -> Result<(), String> {
        self.signer = Some(risk.public_key());
        let sig = risk
            .sign(&self.signed_bytes(bucket))
            .map_err(|e| format!("cannot sign with the risk key: {e}"))?;
        self.signature = Some(hex(&sig));
        Ok(())
    }

    /// Checks a reset's signature against the trusted risk public keys.
    /// `Err` says why it is not a reset the relay may honour.
    pub fn verify_reset(&self, bucket: &str, trusted: &[String]) -> Result<(), String> {
        let (Some(signer), Some(sig)) = (&self.signer, &self.signature) else {
            return Err("the reset is not signed by the risk role".into());
        };
        if !trusted.iter().any(|t| t == signer) {
            return Err(format!(
                "the reset is signed by {signer}, which is not a trusted risk key of this relay"
            ));
        }
        let sig = unhex(sig).ok_or("the reset's signature is not hex")?;
        let key = nkeys::KeyPair::from_public_key(signer)
            .map_err(|e| format!("signer {signer} is not a public nkey: {e}"))?;
        key.verify(&self.signed_bytes(bucket), &sig)
            .map_err(|_| format!("the reset's signature by {signer} does not verify"))
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reset(key: &str) -> FirmRecord {
        FirmRecord {
            v: RECORD_VERSION,
            key: key.into(),
            action: Action::Reset,
            mode: FirmMode::Normal,
            generation: 2,
            reason: "all clear".into(),
            who: "risk@desk".into(),
            when_ns: 1,
            write_id: "w1".into(),
            revision_seen: Some(7),
            signer: None,
            signature: None,
        }
    }

    #[test]
    fn a_signed_reset_verifies_and_any_change_breaks_it() {
        let risk = nkeys::KeyPair::new_user();
        let trusted = vec![risk.public_key()];
        let mut r = reset("firm");
        r.sign("B", &risk).unwrap();
        r.verify_reset("B", &trusted).unwrap();
        let back = FirmRecord::decode(&r.encode()).unwrap();
        back.verify_reset("B", &trusted).unwrap();

        // Another bucket, key, revision or reason: the signature is void.
        assert!(r.verify_reset("OTHER", &trusted).is_err());
        for tamper in [
            |r: &mut FirmRecord| r.key = "desk.x".into(),
            |r: &mut FirmRecord| r.revision_seen = Some(8),
            |r: &mut FirmRecord| r.reason = "x".into(),
            |r: &mut FirmRecord| r.generation += 1,
        ] {
            let mut t = r.clone();
            tamper(&mut t);
            assert!(t.verify_reset("B", &trusted).is_err());
        }
        // Not trusted, not signed, garbage signature.
        let other = nkeys::KeyPair::new_user();
        assert!(r.verify_reset("B", &[other.public_key()]).is_err());
        assert!(reset("firm").verify_reset("B", &trusted).is_err());
        let mut g = r.clone();
        g.signature = Some("zz".into());
        assert!(g.verify_reset("B", &trusted).is_err());
    }

    #[test]
    fn garbage_and_unknown_versions_are_errors_not_panics() {
        for bad in [&b""[..], b"{", b"null", b"\xff\xfe", b"{\"v\":1}"] {
            assert!(FirmRecord::decode(bad).is_err());
        }
        let mut r = reset("firm");
        r.v = 9;
        let e = FirmRecord::decode(&r.encode()).unwrap_err();
        assert!(e.contains("version 9"), "{e}");
    }
}
