/*!
The master key: 256 random bits that the user holds. Every object in a repository is sealed with
a key derived from it (see `seal`), and its 16-byte key id, also derived from it, is written in
every object header so that the wrong key is a clear error rather than an authentication failure.

A key file is text: optional `#` comment lines, then the key in standard base64 on one line.
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

/// The user's master key. Never printed: `Debug` shows only its key id.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; KEY_LEN],
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id {})", self.id())
    }
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
        Ok(MasterKey { bytes })
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        MasterKey { bytes }
    }

    /// Parses key file text: `#` comment lines and blank lines are ignored; one base64 line.
    /// `origin` names where the text came from, for the error message.
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
        let [line] = lines.as_slice() else {
            return Err(bad());
        };
        let decoded = Zeroizing::new(B64.decode(line).map_err(|_| bad())?);
        let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| bad())?;
        Ok(MasterKey { bytes })
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

    pub fn id(&self) -> KeyId {
        let hk = Hkdf::<Sha256>::new(None, &self.bytes);
        let mut id = [0u8; KEY_ID_LEN];
        hk.expand(KEY_ID_INFO, &mut id)
            .expect("16 bytes is a valid HKDF-SHA256 output length");
        KeyId(id)
    }

    /// A keyed digest of `data` for one `purpose` (HMAC-SHA-256 under a key derived with HKDF,
    /// so no other use of the master key can produce it): proves that the holder of this key
    /// wrote `data`.
    pub fn mac(&self, purpose: &[u8], data: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, KeyInit, Mac};
        let mut k = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, &self.bytes)
            .expand(purpose, &mut *k)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut m = Hmac::<Sha256>::new_from_slice(&*k).expect("HMAC takes any key length");
        m.update(data);
        m.finalize().into_bytes().into()
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// The key file text: a comment naming the key id, then the base64 key.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "# OffsiteDB master key, key id {}\n\
             # Keep a copy somewhere other than the backup bucket: without it no backup can be restored.\n\
             {}\n",
            self.id(),
            B64.encode(self.bytes)
        ))
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
