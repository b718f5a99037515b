//! API keys: generated with enough entropy, stored only as their sha256, shown once.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::{fmt, str::FromStr};

/// A raw key as presented by a client. Its `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

/// The sha256 of a key: what the database stores and what lookups use.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl ApiKey {
    /// A new key: `fl_` and 32 random bytes in hex. Only word characters, because a key is also
    /// the public key of a Sentry DSN and the JavaScript SDK accepts nothing else there (`\w+`):
    /// a base64url key with a `-` would be an "Invalid Sentry Dsn".
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        ApiKey(format!("fl_{}", hex::encode(bytes)))
    }

    /// Accepts what a client sent, refusing what cannot be a key (empty, too long, control chars),
    /// so that junk never reaches the database.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > 256 || raw.chars().any(|c| c.is_control()) {
            return None;
        }
        Some(ApiKey(raw.to_string()))
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }

    /// What listings show: enough to recognise a key, not enough to use it.
    pub fn preview(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        let head: String = chars.iter().take(3).collect();
        let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
        format!("{head}****{tail}")
    }

    /// The secret itself, for the one time it is shown to its creator.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.preview())
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", hex::encode(&self.0[..4]))
    }
}

/// What a key may do. `ingest` is for SDK keys: post events and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    Ingest,
    Read,
    Write,
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::Ingest,
        Permission::Read,
        Permission::Write,
        Permission::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Ingest => "ingest",
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown permission {0:?}: expected ingest, read, write or admin")]
pub struct UnknownPermission(pub String);

impl FromStr for Permission {
    type Err = UnknownPermission;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "ingest" => Ok(Permission::Ingest),
            "read" => Ok(Permission::Read),
            "write" => Ok(Permission::Write),
            "admin" => Ok(Permission::Admin),
            other => Err(UnknownPermission(other.to_string())),
        }
    }
}

/// A set of permissions. `admin` implies everything; `write` implies `ingest` (a key that may
/// change data may also report errors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions(Vec<Permission>);

impl Permissions {
    pub fn new(mut list: Vec<Permission>) -> Self {
        list.sort();
        list.dedup();
        Permissions(list)
    }

    pub fn parse_list(items: &[String]) -> Result<Self, UnknownPermission> {
        items
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    pub fn allows(&self, wanted: Permission) -> bool {
        self.0.contains(&Permission::Admin)
            || self.0.contains(&wanted)
            || (wanted == Permission::Ingest && self.0.contains(&Permission::Write))
    }

    pub fn as_strings(&self) -> Vec<String> {
        self.0.iter().map(|p| p.as_str().to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_prefixed_long_and_distinct() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert!(a.expose().starts_with("fl_"));
        assert_eq!(a.expose().len(), 3 + 64);
        assert!(
            a.expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "usable in any SDK's DSN"
        );
        assert_ne!(a, b);
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn debug_output_never_contains_the_secret() {
        let key = ApiKey::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.expose()[3..20]));
        assert!(shown.contains("****"));
    }

    #[test]
    fn the_hash_is_the_sha256_of_the_key() {
        let key = ApiKey::parse("test-api-key").unwrap();
        assert_eq!(
            hex::encode(key.hash().0),
            "4c806362b613f7496abf284146efd31da90e4b16169fe001841ca17290f427c4"
        );
    }

    #[test]
    fn junk_is_not_a_key() {
        assert!(ApiKey::parse("").is_none());
        assert!(ApiKey::parse("a\u{0}b").is_none());
        assert!(ApiKey::parse(&"x".repeat(300)).is_none());
    }

    #[test]
    fn admin_implies_all_and_write_implies_ingest() {
        let admin = Permissions::new(vec![Permission::Admin]);
        assert!(Permission::ALL.iter().all(|p| admin.allows(*p)));
        let write = Permissions::new(vec![Permission::Write]);
        assert!(write.allows(Permission::Ingest));
        assert!(!write.allows(Permission::Read));
        let ingest = Permissions::new(vec![Permission::Ingest]);
        assert!(!ingest.allows(Permission::Write));
        assert!(Permissions::parse_list(&["root".into()]).is_err());
    }
}
