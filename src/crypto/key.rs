/*!
The master key: 256 random bits that the user holds. Every object in a repository is sealed with
a key derived from it (see `seal`), and its 16-byte key id, also derived from it, is written in
every object header so that the wrong key is a clear error rather than an authentication failure.

A [`MasterKey`] is a keyring: the *current* key, which seals every new object, and after a
rotation (`offsitedb key rotate`) the older keys, kept only to read what they sealed. Readers pick
the key by the key id in each object's header, so the code that passes a `&MasterKey` around
does not care how many keys it holds.

A key file is text: `#` comment lines and blank lines, then one key per line in standard base64;
the first key line is the current key. A file of one key line (all files before rotation) is a
keyring of one key.
*/

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

pub const KEY_LEN: usize = 32;
pub const KEY_ID_LEN: usize = 16;
const KEY_ID_INFO: &[u8] = b"offsitedb v1 key id";

const NO_KEY_HINT: &str = "pass --key-file FILE, or set OFFSITEDB_KEY_FILE or OFFSITEDB_KEY, \
     or set key_file under [repository] in offsitedb.toml; make a key with `offsitedb keygen -o FILE`";

/// The user's master key, as a keyring: the current key first, then older keys kept to read.
/// Never printed: `Debug` shows only key ids.
#[derive(Clone)]
pub struct MasterKey {
    /// Never empty; `keys[0]` is the current key. No two are the same.
    keys: Vec<[u8; KEY_LEN]>,
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        for k in &mut self.keys {
            k.zeroize();
        }
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id {}", self.id())?;
        if self.keys.len() > 1 {
            let older: Vec<String> = self.ids()[1..].iter().map(|i| i.to_string()).collect();
            write!(f, ", older {}", older.join(", "))?;
        }
        f.write_str(")")
    }
}

fn id_of(bytes: &[u8; KEY_LEN]) -> KeyId {
    let hk = Hkdf::<Sha256>::new(None, bytes);
    let mut id = [0u8; KEY_ID_LEN];
    hk.expand(KEY_ID_INFO, &mut id)
        .expect("16 bytes is a valid HKDF-SHA256 output length");
    KeyId(id)
}

fn mac_with(bytes: &[u8; KEY_LEN], purpose: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, KeyInit, Mac};
    let mut k = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, bytes)
        .expand(purpose, &mut *k)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    let mut m = Hmac::<Sha256>::new_from_slice(&*k).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// 16 bytes derived from a master key: names the key without revealing it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::units::hex(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl MasterKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::internal(format!("the system random generator failed: {e}")))?;
        Ok(MasterKey::from_bytes(bytes))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        MasterKey { keys: vec![bytes] }
    }

    /// A keyring of `current` (which seals) and then every key of `older` (kept to read);
    /// a key already in the ring is not added twice.
    pub fn with_older(current: &MasterKey, older: &MasterKey) -> Self {
        let mut keys = current.keys.clone();
        for k in &older.keys {
            if !keys.contains(k) {
                keys.push(*k);
            }
        }
        MasterKey { keys }
    }

    /// The current key alone (what a rewrapped copy is sealed with).
    pub fn current_only(&self) -> Self {
        MasterKey::from_bytes(self.keys[0])
    }

    /// Every key id of the ring, the current key's first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(id_of).collect()
    }

    /// Whether the ring holds the key of this id.
    pub fn has(&self, id: &KeyId) -> bool {
        self.keys.iter().any(|k| &id_of(k) == id)
    }

    /// The ring's key ids for a message: "key id X" or "key ids X (current), Y".
    pub fn describe_ids(&self) -> String {
        let ids = self.ids();
        if ids.len() == 1 {
            return format!("key id {}", ids[0]);
        }
        let rest: Vec<String> = ids[1..].iter().map(|i| i.to_string()).collect();
        format!("key ids {} (current), {}", ids[0], rest.join(", "))
    }

    /// The error for an object sealed with a key the ring does not hold.
    pub fn missing_error(&self, what: &str, theirs: &KeyId) -> Error {
        let given = if self.keys.len() == 1 {
            format!("the key given has {}", self.describe_ids())
        } else {
            format!("the key file holds {}", self.describe_ids())
        };
        Error::key(format!("{what} was sealed with key id {theirs}, but {given}"))
            .with_hint("use the key file this repository was created with, holding every key it was rotated from (its comment lines name their key ids)")
    }

    /// Parses key file text: `#` comment lines and blank lines are ignored; one base64 key per
    /// line, the current key first. `origin` names where the text came from, for the error
    /// message.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let bad = || {
            Error::key(format!("{origin} does not hold a valid OffsiteDB key"))
                .with_hint("a key is 32 random bytes in base64 (44 characters); make one with `offsitedb keygen -o FILE`")
        };
        if lines.is_empty() {
            return Err(bad());
        }
        let mut keys: Vec<[u8; KEY_LEN]> = Vec::with_capacity(lines.len());
        for line in lines {
            let decoded = Zeroizing::new(B64.decode(line).map_err(|_| bad())?);
            let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| bad())?;
            // The same key twice (a copy pasted again) reads as once.
            if !keys.contains(&bytes) {
                keys.push(bytes);
            }
        }
        Ok(MasterKey { keys })
    }

    /// Reads a key file. Warns (through `warn`) when the file is readable by group or others.
    pub fn load_file(path: &Path, warn: &mut dyn FnMut(String)) -> Result<Self> {
        let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| {
            let err = Error::io_at("cannot read key file", path, &e);
            Error::key(err.message().to_string()).with_hint(NO_KEY_HINT)
        })?);
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            warn(format!(
                "key file {} is readable by other users; run: chmod 600 {}",
                path.display(),
                path.display()
            ));
        }
        Self::parse(&text, &format!("key file {}", path.display()))
    }

    /// Where a command finds its key, in order: an explicit file, `OFFSITEDB_KEY_FILE`,
    /// `OFFSITEDB_KEY`, then the configuration's key file.
    pub fn resolve(
        flag_file: Option<&Path>,
        config_file: Option<&Path>,
        warn: &mut dyn FnMut(String),
    ) -> Result<Self> {
        if let Some(p) = flag_file {
            return Self::load_file(p, warn);
        }
        if let Some(p) = std::env::var_os("OFFSITEDB_KEY_FILE").filter(|v| !v.is_empty()) {
            return Self::load_file(Path::new(&p), warn);
        }
        if let Ok(v) = std::env::var("OFFSITEDB_KEY")
            && !v.trim().is_empty()
        {
            let v = Zeroizing::new(v);
            return Self::parse(&v, "OFFSITEDB_KEY");
        }
        if let Some(p) = config_file {
            return Self::load_file(p, warn);
        }
        Err(Error::key("no master key given").with_hint(NO_KEY_HINT))
    }

    /// The current key's id: the one written into every new object's header.
    pub fn id(&self) -> KeyId {
        id_of(&self.keys[0])
    }

    /// A keyed digest of `data` for one `purpose` (HMAC-SHA-256 under a key derived with HKDF
    /// from the current key, so no other use of the master key can produce it): proves that
    /// the holder of this key wrote `data`.
    pub fn mac(&self, purpose: &[u8], data: &[u8]) -> [u8; 32] {
        mac_with(&self.keys[0], purpose, data)
    }

    /// [`MasterKey::mac`] under the ring's key of id `id`; `None` when the ring lacks it.
    pub fn mac_by(&self, id: &KeyId, purpose: &[u8], data: &[u8]) -> Option<[u8; 32]> {
        self.secret(id).map(|k| mac_with(k, purpose, data))
    }

    /// The current key's bytes (sealing).
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.keys[0]
    }

    /// The bytes of the ring's key of id `id` (unsealing).
    pub(crate) fn secret(&self, id: &KeyId) -> Option<&[u8; KEY_LEN]> {
        self.keys.iter().find(|k| &id_of(k) == id)
    }

    /// The key file text: comments naming the key ids, then the base64 keys, current first (a
    /// single key keeps the format of files written before keyrings).
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let mut t = Zeroizing::new(String::new());
        let keep = "# Keep a copy somewhere other than the backup bucket: without it no backup can be restored.\n";
        if self.keys.len() == 1 {
            t.push_str(&format!("# OffsiteDB master key, key id {}\n", self.id()));
            t.push_str(keep);
            t.push_str(&B64.encode(self.keys[0]));
            t.push('\n');
            return t;
        }
        t.push_str(&format!(
            "# OffsiteDB keyring, current key id {}\n",
            self.id()
        ));
        t.push_str(
            "# The first key line seals new backups; the others are older keys, kept to read what they sealed.\n",
        );
        t.push_str(keep);
        for (i, k) in self.keys.iter().enumerate() {
            let role = if i == 0 { "current" } else { "older" };
            t.push_str(&format!("# key id {} ({role})\n", id_of(k)));
            t.push_str(&B64.encode(k));
            t.push('\n');
        }
        t
    }

    /// Writes a new key file with mode 0600; refuses to replace an existing file.
    pub fn write_new_file(&self, path: &Path) -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::key(format!(
                        "refusing to overwrite the existing key file {}",
                        path.display()
                    ))
                    .with_hint("a key file may be the only way to read existing backups; choose another path")
                } else {
                    Error::io_at("cannot create key file", path, &e)
                }
            })?;
        // create_new honours the umask; make sure the mode is exactly 0600.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io_at("cannot set permissions on", path, &e))?;
        f.write_all(self.to_file_text().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| {
                // A partial key file would be refused by the next keygen and read by nobody.
                let _ = fs::remove_file(path);
                Error::io_at("cannot write key file", path, &e)
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_text_round_trips_and_ignores_comments() {
        let k = MasterKey::generate().unwrap();
        let back = MasterKey::parse(&k.to_file_text(), "test").unwrap();
        assert_eq!(k.bytes(), back.bytes());
        assert_eq!(k.id(), back.id());
    }

    #[test]
    fn rejects_malformed_keys() {
        for text in [
            "",
            "# only a comment\n",
            "not base64!",
            "AAAA",
            "QUFB\nQUFB\n",
        ] {
            let e = MasterKey::parse(text, "test").unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Key, "{text:?}");
        }
    }

    #[test]
    fn key_id_is_stable_and_distinct() {
        let a = MasterKey::from_bytes([1; 32]);
        let b = MasterKey::from_bytes([2; 32]);
        assert_eq!(a.id(), MasterKey::from_bytes([1; 32]).id());
        assert_ne!(a.id(), b.id());
        assert!(!format!("{a:?}").contains(&B64.encode([1u8; 32])));
    }

    #[test]
    fn a_keyring_file_round_trips_current_first() {
        let (a, b) = (
            MasterKey::from_bytes([1; 32]),
            MasterKey::from_bytes([2; 32]),
        );
        let ring = MasterKey::with_older(&a, &b);
        let text = ring.to_file_text();
        assert!(text.starts_with(&format!("# OffsiteDB keyring, current key id {}\n", a.id())));
        let back = MasterKey::parse(&text, "test").unwrap();
        assert_eq!(back.ids(), vec![a.id(), b.id()]);
        assert_eq!(back.id(), a.id());
        assert!(back.has(&b.id()) && !back.has(&MasterKey::from_bytes([3; 32]).id()));
        // A key pasted twice is one key; the single-key format is unchanged.
        let twice = format!("{}{}", a.to_file_text().as_str(), a.to_file_text().as_str());
        assert_eq!(MasterKey::parse(&twice, "t").unwrap().ids(), vec![a.id()]);
        assert!(!a.to_file_text().contains("keyring"));
        let debug = format!("{ring:?}");
        assert!(debug.contains(&b.id().to_string()), "{debug}");
        for k in [[1u8; 32], [2u8; 32]] {
            assert!(!debug.contains(&B64.encode(k)) && !text.is_empty());
        }
    }

    #[test]
    fn new_key_file_is_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let k = MasterKey::generate().unwrap();
        k.write_new_file(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = MasterKey::generate()
            .unwrap()
            .write_new_file(&path)
            .unwrap_err();
        assert!(e.message().contains("refusing to overwrite"), "{e}");
        let loaded = MasterKey::load_file(&path, &mut |_| {}).unwrap();
        assert_eq!(loaded.id(), k.id());
    }
}
