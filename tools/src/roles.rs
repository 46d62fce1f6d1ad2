//! Who may reset: the roles file and the role tokens.
//!
//! A **roles file** lists identities, each with its role (`trader` or
//! `risk`) and the SHA-256 of its token, never the token itself:
//!
//! ```toml
//! [[identity]]
//! name = "rita"                 # recorded in the audit ring (up to 31 bytes)
//! role = "risk"
//! token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! ```
//!
//! It must belong to the user that reads it and be writable by nobody else
//! (whoever can add a line can give themselves the risk role); it may be
//! readable by others, since it holds only hashes of 256-bit random tokens.
//! A **token file** holds one token and must be private to its owner (mode
//! 0600 or stricter, not a symbolic link): `killswitch roles add` writes
//! both. The admin endpoint takes the token as `Authorization: Bearer
//! <token>`; the CLI as `--role R --token-file F`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use killswitch::access::Access;
use killswitch::control::Role;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Environment variable naming the roles file.
pub const ROLES_ENV: &str = "KILLSWITCH_ROLES";
/// Longest token accepted (a generated one is 64 hex characters).
pub const MAX_TOKEN_BYTES: usize = 256;

/// One identity of the roles file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Who (kept in the audit ring).
    pub name: String,
    /// `trader` or `risk`.
    pub role: String,
    /// SHA-256 of the token, 64 hex digits.
    pub token_sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesToml {
    #[serde(default)]
    identity: Vec<Identity>,
}

/// An identity whose token checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// A loaded, validated roles file.
#[derive(Clone, Debug)]
pub struct Roles {
    path: PathBuf,
    entries: Vec<(Authenticated, [u8; 32])>,
}

/// Opens a file without following a symbolic link and checks its owner.
fn open_checked(path: &Path, what: &str) -> Result<File, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                format!(
                    "{what} {}: it is a symbolic link; name the file itself",
                    path.display()
                )
            } else {
                format!("{what} {}: {e}", path.display())
            }
        })?;
    Ok(file)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compares without an early exit, so the time taken does not say how
/// many leading bytes matched.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Roles {
    /// Loads and checks a roles file.
    pub fn load(path: &Path) -> Result<Roles, String> {
        let mut file = open_checked(path, "roles file")?;
        let meta = file
            .metadata()
            .map_err(|e| format!("roles file {}: {e}", path.display()))?;
        Access::OWNER_ONLY.check_metadata(&meta).map_err(|why| {
            format!(
                "roles file {} refused: {why}; whoever can write it can give themselves the risk role: `chmod go-w` it and make it yours",
                path.display()
            )
        })?;
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| format!("roles file {}: {e}", path.display()))?;
        let parsed: RolesToml =
            toml::from_str(&text).map_err(|e| format!("roles file {}: {e}", path.display()))?;
        let mut entries: Vec<(Authenticated, [u8; 32])> = Vec::new();
        for (n, id) in parsed.identity.iter().enumerate() {
            let at = format!(
                "roles file {}: identity #{} ({:?})",
                path.display(),
                n + 1,
                id.name
            );
            if !killswitch::control::valid_name(&id.name) {
                return Err(format!(
                    "{at}: name must be 1 to 31 characters from A-Z a-z 0-9 _ - . : /"
                ));
            }
            let role = Role::parse(&id.role).ok_or_else(|| {
                format!(
                    "{at}: role {:?} is neither \"trader\" nor \"risk\"",
                    id.role
                )
            })?;
            let hash = parse_hex32(&id.token_sha256).ok_or_else(|| {
                format!("{at}: token_sha256 must be 64 hex digits (the SHA-256 of the token; `killswitch roles add` writes it)")
            })?;
            if entries.iter().any(|(a, _)| a.name == id.name) {
                return Err(format!("{at}: the name appears twice"));
            }
            if entries.iter().any(|(_, h)| *h == hash) {
                return Err(format!(
                    "{at}: the same token is listed twice: every identity needs its own token"
                ));
            }
            entries.push((
                Authenticated {
                    name: id.name.clone(),
                    role,
                },
                hash,
            ));
        }
        Ok(Roles {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The roles file named by `path`, else by `$KILLSWITCH_ROLES`.
    pub fn load_configured(path: Option<&Path>) -> Result<Roles, String> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => std::env::var_os(ROLES_ENV).map(PathBuf::from).ok_or_else(|| {
                format!("no roles file: give --roles-file FILE or set {ROLES_ENV} (`killswitch roles add` creates one)")
            })?,
        };
        Roles::load(&path)
    }

    /// Where it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of identities.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when it lists nobody.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The identity whose token this is, if any. Every entry is compared,
    /// matching or not.
    pub fn authenticate(&self, token: &str) -> Option<Authenticated> {
        let h = sha256(token.as_bytes());
        let mut found = None;
        for (who, hash) in &self.entries {
            if same(&h, hash) && found.is_none() {
                found = Some(who.clone());
            }
        }
        found
    }
}

/// Reads a token file: private to its owner (0600 or stricter), not a
/// symbolic link; the token is its content without surrounding whitespace.
pub fn read_token_file(path: &Path) -> Result<String, String> {
    let mut file = open_checked(path, "token file")?;
    let meta = file
        .metadata()
        .map_err(|e| format!("token file {}: {e}", path.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(format!(
            "token file {} belongs to uid {}, not to uid {euid}: use your own token",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "token file {} has mode {:04o}: others can read it, so the token may be known to them; `chmod 600` it (and consider replacing the token)",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    let mut text = String::new();
    Read::by_ref(&mut file)
        .take(MAX_TOKEN_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("token file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || text.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "token file {} must hold one token of 1 to {MAX_TOKEN_BYTES} bytes",
            path.display()
        ));
    }
    Ok(token.to_string())
}

/// A new random token: 32 bytes from the kernel, as 64 hex digits.
pub fn new_token() -> Result<String, String> {
    let mut buf = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(hex(&buf))
}

/// Creates an identity: writes a new token to `token_out` (mode 0600,
/// never over an existing file) and appends the identity to the roles
/// file (created 0600 if missing). Returns the entry written.
pub fn add_identity(
    roles_file: &Path,
    name: &str,
    role: Role,
    token_out: &Path,
) -> Result<Identity, String> {
    if roles_file.exists() {
        let roles = Roles::load(roles_file)?;
        if roles.entries.iter().any(|(a, _)| a.name == name) {
            return Err(format!(
                "roles file {} already lists {name:?}: pick another name or edit the file",
                roles_file.display()
            ));
        }
    }
    if !killswitch::control::valid_name(name) {
        return Err(format!(
            "identity {name:?}: use 1 to 31 characters from A-Z a-z 0-9 _ - . : /"
        ));
    }
    let token = new_token()?;
    let id = Identity {
        name: name.to_string(),
        role: role.as_str().to_string(),
        token_sha256: hex(&sha256(token.as_bytes())),
    };
    let mut tf = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(token_out)
        .map_err(|e| {
            format!(
                "token file {}: {e} (it is never overwritten)",
                token_out.display()
            )
        })?;
    tf.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| tf.sync_all())
        .map_err(|e| format!("token file {}: {e}", token_out.display()))?;
    let entry = toml::to_string(&RolesToml {
        identity: vec![id.clone()],
    })
    .map_err(|e| e.to_string())?;
    let mut rf = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(roles_file)
        .map_err(|e| format!("roles file {}: {e}", roles_file.display()))?;
    rf.write_all(format!("\n{entry}").as_bytes())
        .and_then(|()| rf.sync_all())
        .map_err(|e| format!("roles file {}: {e}", roles_file.display()))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn add_then_authenticate_and_refuse_everything_else() {
        let d = tempfile::tempdir().unwrap();
        let roles = d.path().join("roles.toml");
        add_identity(&roles, "rita", Role::Risk, &d.path().join("rita.token")).unwrap();
        add_identity(&roles, "tom", Role::Trader, &d.path().join("tom.token")).unwrap();
        let r = Roles::load(&roles).unwrap();
        assert_eq!(r.len(), 2);
        let rita = read_token_file(&d.path().join("rita.token")).unwrap();
        let tom = read_token_file(&d.path().join("tom.token")).unwrap();
        assert_eq!(r.authenticate(&rita).unwrap().role, Role::Risk);
        assert_eq!(r.authenticate(&tom).unwrap().name, "tom");
        assert!(r.authenticate("guess").is_none());
        assert!(r.authenticate(&rita[..63]).is_none());
        // The same name twice, or an existing token file, is refused.
        assert!(add_identity(&roles, "tom", Role::Risk, &d.path().join("x")).is_err());
        assert!(add_identity(&roles, "tim", Role::Risk, &d.path().join("tom.token")).is_err());
        // A token file others can read is refused.
        std::fs::set_permissions(
            d.path().join("tom.token"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let e = read_token_file(&d.path().join("tom.token")).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        // A roles file others can write is refused.
        std::fs::set_permissions(&roles, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = Roles::load(&roles).unwrap_err();
        assert!(e.contains("risk role"), "{e}");
    }

    #[test]
    fn malformed_roles_files_name_the_entry_and_the_field() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("roles.toml");
        let write = |text: &str| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&p)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        let h = "a".repeat(64);
        for (text, needle) in [
            (format!("[[identity]]\nname = \"x\"\nrole = \"boss\"\ntoken_sha256 = \"{h}\"\n"), "neither"),
            ("[[identity]]\nname = \"x\"\nrole = \"risk\"\ntoken_sha256 = \"abc\"\n".to_string(), "64 hex"),
            (format!("[[identity]]\nname = \"x\"\nrole = \"risk\"\ntoken_sha256 = \"{h}\"\n[[identity]]\nname = \"y\"\nrole = \"risk\"\ntoken_sha256 = \"{h}\"\n"), "twice"),
            (format!("[[identity]]\nname = \"x\"\nrole = \"risk\"\ntoken = \"{h}\"\n"), "unknown field"),
        ] {
            write(&text);
            let e = Roles::load(&p).unwrap_err();
            assert!(e.contains(needle) && e.contains("roles.toml"), "{e}");
        }
    }
}
