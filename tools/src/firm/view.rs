//! What a relay knows of the firm bucket, and the mode it must enforce.
//!
//! Pure functions over the entries read from NATS, so the rule "what does
//! this host obey" is tested without a server: the strongest mode of the
//! keys that apply to the host (`firm`, `desk.<d>` for each of its desks,
//! `host.<h>`), where anything that claims "normal" without being a verified
//! reset of the risk role counts as KILL.

use std::collections::BTreeMap;

use killswitch::control::Mode;

use super::record::{Action, FirmMode, FirmRecord};

/// The key every relay obeys.
pub const FIRM_KEY: &str = "firm";

/// A name as it appears in a key: `[A-Za-z0-9_-]` kept, every other byte
/// written `=XX` (hex), so `desk.fx.g10` and `desk.fx-g10` stay distinct and
/// every key is a valid NATS key-value key.
pub fn encode_name(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!("={b:02X}"));
        }
    }
    s
}

/// `desk.<name>`.
pub fn desk_key(desk: &str) -> String {
    format!("desk.{}", encode_name(desk))
}

/// `host.<name>`.
pub fn host_key(host: &str) -> String {
    format!("host.{}", encode_name(host))
}

/// The acknowledgement key of one engine: `ack.<host>.<engine>` (in the acks bucket).
pub fn ack_key(host: &str, engine: &str) -> String {
    format!("ack.{}.{}", encode_name(host), encode_name(engine))
}

/// The keys a host obeys, strongest scope last: `firm`, its desks, itself.
pub fn keys_for(host: &str, desks: &[String]) -> Vec<String> {
    let mut keys = vec![FIRM_KEY.to_string()];
    keys.extend(desks.iter().map(|d| desk_key(d)));
    keys.push(host_key(host));
    keys
}

/// One key as last read, with the relay's judgement of a reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyContent {
    /// A record; for a reset, whether it is one the relay may honour
    /// (signature by a trusted risk key over the revision it replaced).
    Record {
        /// The record.
        record: FirmRecord,
        /// `Ok` for a trip, or for a verified reset; `Err(why)` otherwise.
        honoured: Result<(), String>,
    },
    /// The key was deleted or purged: not a signed reset.
    Deleted,
    /// The value does not parse.
    Unreadable(String),
}

/// One key of the bucket at a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// Revision (stream sequence) of the entry.
    pub revision: u64,
    /// What it says.
    pub content: KeyContent,
    /// The reset could not be checked this time (NATS did not answer, or
    /// its history did not show the revision yet): held as KILL meanwhile,
    /// and checked again on the next read instead of being cached.
    pub recheck: bool,
}

/// What one key asks of the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVerdict {
    /// Mode to enforce (`Normal` for nothing).
    pub mode: Mode,
    /// Why, for the audit ring and the log.
    pub why: String,
}

/// The verdict on one key's entry (`None` = the key was never written).
pub fn verdict(key: &str, entry: Option<&KeyEntry>) -> KeyVerdict {
    let Some(e) = entry else {
        return KeyVerdict {
            mode: Mode::Normal,
            why: String::new(),
        };
    };
    let held = |what: String| KeyVerdict {
        mode: Mode::Kill,
        why: format!("{key} rev {}: {what}: held as KILL", e.revision),
    };
    match &e.content {
        KeyContent::Deleted => held("deleted (a delete is not a signed reset)".into()),
        KeyContent::Unreadable(why) => held(format!("unreadable value ({why})")),
        KeyContent::Record { record, honoured } => match (record.action, honoured) {
            (_, Err(why)) => held(why.clone()),
            (Action::Reset, Ok(())) => KeyVerdict {
                mode: Mode::Normal,
                why: format!(
                    "{key} rev {}: reset by {}: {}",
                    e.revision, record.who, record.reason
                ),
            },
            (Action::Trip, Ok(())) if record.mode == FirmMode::Normal => {
                held("a trip record with mode normal".into())
            }
            (Action::Trip, Ok(())) => KeyVerdict {
                mode: record.mode.into(),
                why: format!(
                    "{key} rev {}: {} by {}: {}",
                    e.revision,
                    Mode::from(record.mode),
                    record.who,
                    record.reason
                ),
            },
        },
    }
}

/// The mode a host must enforce and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// Strongest mode over the host's keys.
    pub mode: Option<Mode>,
    /// The verdicts at that mode, joined.
    pub why: String,
    /// Revision of each key the target was computed from (0: never written).
    pub keys_seen: BTreeMap<String, u64>,
}

/// The strongest verdict over `keys`.
pub fn target(entries: &BTreeMap<String, KeyEntry>, keys: &[String]) -> Target {
    let verdicts: Vec<KeyVerdict> = keys.iter().map(|k| verdict(k, entries.get(k))).collect();
    let mode = verdicts
        .iter()
        .map(|v| v.mode)
        .max()
        .unwrap_or(Mode::Normal);
    let why = verdicts
        .iter()
        .filter(|v| v.mode == mode && !v.why.is_empty())
        .map(|v| v.why.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Target {
        mode: Some(mode),
        why,
        keys_seen: keys
            .iter()
            .map(|k| (k.clone(), entries.get(k).map(|e| e.revision).unwrap_or(0)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firm::record::RECORD_VERSION;

    fn rec(key: &str, action: Action, mode: FirmMode) -> FirmRecord {
        FirmRecord {
            v: RECORD_VERSION,
            key: key.into(),
            action,
            mode,
            generation: 1,
            reason: "r".into(),
            who: "w".into(),
            when_ns: 0,
            write_id: "x".into(),
            revision_seen: None,
            signer: None,
            signature: None,
        }
    }

    fn entry(revision: u64, content: KeyContent) -> KeyEntry {
        KeyEntry {
            revision,
            content,
            recheck: false,
        }
    }

    #[test]
    fn names_encode_to_distinct_valid_keys() {
        assert_eq!(desk_key("fx-g10"), "desk.fx-g10");
        assert_eq!(desk_key("fx.g10"), "desk.fx=2Eg10");
        assert_eq!(ack_key("h1", "eng:1/a"), "ack.h1.eng=3A1=2Fa");
        assert_eq!(
            keys_for("h", &["a".into()]),
            vec!["firm", "desk.a", "host.h"]
        );
    }

    #[test]
    fn the_strongest_key_wins_and_anything_unverified_is_kill() {
        let keys = keys_for("h1", &["fx".into()]);
        let mut m = BTreeMap::new();
        let t = target(&m, &keys);
        assert_eq!(t.mode, Some(Mode::Normal));
        assert_eq!(t.keys_seen["firm"], 0);

        m.insert(
            "desk.fx".into(),
            entry(
                3,
                KeyContent::Record {
                    record: rec("desk.fx", Action::Trip, FirmMode::HaltNew),
                    honoured: Ok(()),
                },
            ),
        );
        assert_eq!(target(&m, &keys).mode, Some(Mode::HaltNew));
        // Another desk's trip does not apply.
        m.insert(
            "desk.eq".into(),
            entry(
                4,
                KeyContent::Record {
                    record: rec("desk.eq", Action::Trip, FirmMode::Kill),
                    honoured: Ok(()),
                },
            ),
        );
        assert_eq!(target(&m, &keys).mode, Some(Mode::HaltNew));

        // An unverified reset of the firm key holds KILL, and says why.
        m.insert(
            "firm".into(),
            entry(
                5,
                KeyContent::Record {
                    record: rec("firm", Action::Reset, FirmMode::Normal),
                    honoured: Err("the reset is not signed by the risk role".into()),
                },
            ),
        );
        let t = target(&m, &keys);
        assert_eq!(t.mode, Some(Mode::Kill));
        assert!(t.why.contains("not signed"), "{}", t.why);
        assert_eq!(t.keys_seen["firm"], 5);

        for bad in [
            KeyContent::Deleted,
            KeyContent::Unreadable("junk".into()),
            KeyContent::Record {
                record: rec("firm", Action::Trip, FirmMode::Normal),
                honoured: Ok(()),
            },
        ] {
            m.insert("firm".into(), entry(6, bad));
            assert_eq!(target(&m, &keys).mode, Some(Mode::Kill));
        }

        // A verified reset lifts the firm key; the desk's HALT remains.
        m.insert(
            "firm".into(),
            entry(
                7,
                KeyContent::Record {
                    record: rec("firm", Action::Reset, FirmMode::Normal),
                    honoured: Ok(()),
                },
            ),
        );
        assert_eq!(target(&m, &keys).mode, Some(Mode::HaltNew));
    }
}
