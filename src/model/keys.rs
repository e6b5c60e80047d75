//! API keys: who may send events, read results or change the rules. A key is shown once, when
//! it is made; the store keeps its SHA-256 only.
//!
//! A key reads `csk_<id>_<secret>`: the id (12 hex digits) finds the stored key, the secret (32
//! random bytes, base64url) proves it. Its digest is compared in constant time, and an id that
//! names no key costs the same comparison, so the time of an answer says nothing about a
//! guess.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{EventTime, UnknownValue};

/// Most keys a store keeps.
pub const MAX_KEYS: usize = 1000;
/// Longest key name, in bytes.
pub const MAX_KEY_NAME_BYTES: usize = 64;
/// Events per second of a key made without `--rate`.
pub const DEFAULT_RATE: u32 = 10_000;
/// Events at once of a key made without `--burst`.
pub const DEFAULT_BURST: u32 = 20_000;
const PREFIX: &str = "csk_";
const ID_HEX: usize = 12;

/// What a key lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Send events (`POST /api/v1/events`).
    Ingest,
    /// Read results, where reads need a key (`--require-auth`).
    Read,
    /// Change the alert rules and send deliveries again; reads too.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Ingest, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "scope",
                value: s.to_owned(),
                expected: &["ingest", "read", "admin"],
            })
    }
}

/// The scopes of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub fn of(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Scopes(scopes.into_iter().fold(0, |bits, s| bits | 1 << s as u8))
    }

    /// Whether the key may do what `scope` covers: `admin` covers `read`.
    pub fn allow(self, scope: Scope) -> bool {
        let has = |s: Scope| self.0 & (1 << s as u8) != 0;
        has(scope) || (scope == Scope::Read && has(Scope::Admin))
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |s| self.0 & (1 << *s as u8) != 0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for Scopes {
    type Err = UnknownValue;
    /// A comma-separated list, as [`fmt::Display`] writes it.
    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        let scopes: Result<Vec<Scope>, _> = s
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect();
        Ok(Scopes::of(scopes?))
    }
}

/// How fast a key may send events: a token bucket of `burst` events refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for KeyLimit {
    fn default() -> Self {
        KeyLimit {
            per_second: DEFAULT_RATE,
            burst: DEFAULT_BURST,
        }
    }
}

/// A key as the store keeps it: never its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Public: the part of the key that finds it.
    pub id: String,
    /// Unique among a store's keys; the only thing about a key that logs and metrics name.
    pub name: String,
    pub scopes: Scopes,
    pub limit: KeyLimit,
    pub digest: [u8; 32],
    pub created_at: EventTime,
}

/// Without the digest: nothing about the secret is printed.
impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("limit", &self.limit)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl ApiKey {
    /// Whether `secret` is this key's: in constant time.
    pub fn admits(&self, secret: &str) -> bool {
        digest(secret).ct_eq(&self.digest).into()
    }
}

/// Why a key cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKey {
    #[error(
        "a key name is 1 to {MAX_KEY_NAME_BYTES} of the characters A-Z a-z 0-9 - _ ., got `{0}`"
    )]
    Name(String),
    #[error("a key needs at least one scope (ingest, read, admin)")]
    NoScope,
    #[error("a key's rate and burst are at least 1 event")]
    Limit,
}

/// A key just made: the record to store, and the key to show once.
pub struct NewKey {
    pub key: ApiKey,
    pub token: String,
}

impl NewKey {
    pub fn generate(
        name: &str,
        scopes: Scopes,
        limit: KeyLimit,
        now: EventTime,
    ) -> Result<NewKey, InvalidKey> {
        check_name(name)?;
        if scopes.is_empty() {
            return Err(InvalidKey::NoScope);
        }
        if limit.per_second == 0 || limit.burst == 0 {
            return Err(InvalidKey::Limit);
        }
        let mut rng = rand::rng();
        let mut id = [0u8; ID_HEX / 2];
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let secret = URL_SAFE_NO_PAD.encode(secret);
        let key = ApiKey {
            id: id.clone(),
            name: name.to_owned(),
            scopes,
            limit,
            digest: digest(&secret),
            created_at: now,
        };
        Ok(NewKey {
            key,
            token: format!("{PREFIX}{id}_{secret}"),
        })
    }
}

/// The id and the secret of a key as a client sends it, if it has a key's shape.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == ID_HEX && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty())
        .then_some((id, secret))
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Checks a key's name: plain ASCII, so that logs and metric labels show what it is.
pub fn check_name(name: &str) -> Result<(), InvalidKey> {
    match super::is_plain_name(name, MAX_KEY_NAME_BYTES) {
        true => Ok(()),
        false => Err(InvalidKey::Name(name.chars().take(80).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_admits_its_secret_only() {
        let scopes = Scopes::of([Scope::Ingest]);
        let made = NewKey::generate("feed-1", scopes, KeyLimit::default(), EventTime::now())
            .expect("valid");
        let (id, secret) = split_token(&made.token).expect("a key's shape");
        assert_eq!(id, made.key.id);
        assert!(made.key.admits(secret));
        assert!(!made.key.admits("nope"));
        assert!(!made.token.contains(&made.key.name));
    }

    #[test]
    fn scopes_parse_print_and_admin_covers_read() {
        let s: Scopes = "read,ingest".parse().expect("scopes");
        assert_eq!(s.to_string(), "ingest,read");
        assert!(s.allow(Scope::Read) && s.allow(Scope::Ingest) && !s.allow(Scope::Admin));
        let admin = Scopes::of([Scope::Admin]);
        assert!(admin.allow(Scope::Read) && !admin.allow(Scope::Ingest));
        assert!("write".parse::<Scopes>().is_err());
    }

    #[test]
    fn names_scopes_and_limits_are_checked() {
        let now = EventTime::now();
        let ingest = Scopes::of([Scope::Ingest]);
        for bad in ["", "a b", "S\u{202e}F", &"x".repeat(65)] {
            assert!(NewKey::generate(bad, ingest, KeyLimit::default(), now).is_err());
        }
        let none = NewKey::generate("k", Scopes::default(), KeyLimit::default(), now);
        assert_eq!(none.err(), Some(InvalidKey::NoScope));
        let zero = KeyLimit {
            per_second: 0,
            burst: 1,
        };
        assert_eq!(
            NewKey::generate("k", ingest, zero, now).err(),
            Some(InvalidKey::Limit)
        );
    }

    #[test]
    fn only_a_keys_shape_splits() {
        assert!(split_token("csk_0123456789ab_secret").is_some());
        for bad in [
            "",
            "csk_",
            "csk_0123_x",
            "Bearer x",
            "csk_0123456789ag_x",
            "csk_0123456789ab_",
        ] {
            assert!(split_token(bad).is_none(), "{bad}");
        }
    }
}
