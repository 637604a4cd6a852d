//! Mutual-TLS principals: which client certificates may do what.
//!
//! A certificate only proves who the caller is; what it may do is granted here, per
//! certificate name, in a file the operator mounts from a Secret
//! (`--mtls-principals`). A certificate named by no entry is refused (403): a client CA
//! often signs more than this platform's callers, so being signed is never a grant.
//!
//! ```json
//! {"principals": [
//!   {"cn": "agent-store-1", "scopes": ["stock:read", "stock:adjust"], "locations": ["store-1"],
//!    "store_id": "store-1"},
//!   {"dns": "erp.example.com", "scopes": ["catalog:write", "stock:read"]},
//!   {"uri": "spiffe://example.org/oms", "scopes": ["stock:reserve"]}
//! ]}
//! ```
//!
//! Each entry names exactly one of the subject's common name (`cn`), a DNS name (`dns`) or
//! a URI (`uri`, e.g. a SPIFFE id) of the certificate's subject alternative names. An entry
//! without `locations` may act at every location; `store_id` names the store a store
//! agent's certificate stands for. The file is read again when it changes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::{AuthError, Scope};

/// The names a verified client certificate carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
    /// DNS names among the subject alternative names.
    pub dns_names: Vec<String>,
    /// URIs among the subject alternative names.
    pub uris: Vec<String>,
    /// The whole subject, for logs and the audit record when no common name exists.
    pub subject: String,
}

impl PeerCertificate {
    /// The name recorded as the caller: the common name, else the first SAN, else the
    /// whole subject.
    pub fn display_name(&self) -> &str {
        self.common_name
            .as_deref()
            .or(self.uris.first().map(String::as_str))
            .or(self.dns_names.first().map(String::as_str))
            .unwrap_or(&self.subject)
    }
}

/// What one principal may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The name that matched (`cn:…`, `dns:…`, `uri:…`), recorded as the caller.
    pub principal: String,
    /// Scopes granted.
    pub scopes: BTreeSet<Scope>,
    /// `None`: every location.
    pub locations: Option<BTreeSet<String>>,
    /// The store the certificate stands for, when it is a store agent's.
    pub store_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    principals: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    cn: Option<String>,
    #[serde(default)]
    dns: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    scopes: Vec<String>,
    #[serde(default)]
    locations: Option<Vec<String>>,
    #[serde(default)]
    store_id: Option<String>,
}

/// The parsed file: grants by `kind:name`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PrincipalTable {
    grants: BTreeMap<String, Grant>,
}

impl PrincipalTable {
    /// Parses a principals document; every mistake is an error naming the entry, so a
    /// typo never silently grants or drops access.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File =
            serde_json::from_str(text).map_err(|e| format!("not a principals document: {e}"))?;
        let mut grants = BTreeMap::new();
        for (i, entry) in file.principals.into_iter().enumerate() {
            let (kind, value) = match (&entry.cn, &entry.dns, &entry.uri) {
                (Some(cn), None, None) => ("cn", cn.clone()),
                (None, Some(dns), None) => ("dns", dns.to_ascii_lowercase()),
                (None, None, Some(uri)) => ("uri", uri.clone()),
                _ => {
                    return Err(format!(
                        "principals[{i}]: name exactly one of cn, dns or uri"
                    ));
                }
            };
            if value.trim().is_empty() {
                return Err(format!("principals[{i}]: the {kind} is empty"));
            }
            let name = format!("{kind}:{value}");
            let scopes = entry
                .scopes
                .iter()
                .map(|s| {
                    Scope::parse(s).ok_or_else(|| format!("principals[{i}]: unknown scope {s:?}"))
                })
                .collect::<Result<BTreeSet<_>, _>>()?;
            let store_id = entry
                .store_id
                .map(|id| {
                    stockflow_domain::StoreId::parse(id)
                        .map(String::from)
                        .map_err(|e| format!("principals[{i}]: {e}"))
                })
                .transpose()?;
            let grant = Grant {
                principal: name.clone(),
                scopes,
                locations: entry.locations.map(|l| l.into_iter().collect()),
                store_id,
            };
            if grants.insert(name.clone(), grant).is_some() {
                return Err(format!("principals[{i}]: {name} is listed twice"));
            }
        }
        Ok(Self { grants })
    }

    /// The grant of `certificate`: its common name's entry first, then its SAN URIs,
    /// then its SAN DNS names. `None` when no entry names it.
    pub fn grant(&self, certificate: &PeerCertificate) -> Option<&Grant> {
        let names = certificate
            .common_name
            .iter()
            .map(|cn| format!("cn:{cn}"))
            .chain(certificate.uris.iter().map(|u| format!("uri:{u}")))
            .chain(
                certificate
                    .dns_names
                    .iter()
                    .map(|d| format!("dns:{}", d.to_ascii_lowercase())),
            );
        names.into_iter().find_map(|n| self.grants.get(&n))
    }

    /// How many principals are listed.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }
}

/// How often the file is looked at for a change.
const RELOAD_CHECK: Duration = Duration::from_secs(10);

/// The principals file, read again when it changes (a mounted Secret is updated in place
/// by the kubelet). A changed file that does not parse keeps the table loaded before, so
/// a half-written update never locks every caller out or lets everyone in.
#[derive(Debug)]
pub struct Principals {
    path: PathBuf,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    table: PrincipalTable,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl Principals {
    /// Reads `path`; fails when it cannot be read or does not parse.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let (table, modified) = read(path)?;
        tracing::info!(path = %path.display(), principals = table.len(), "mutual-TLS principals loaded");
        Ok(Self {
            path: path.to_path_buf(),
            current: RwLock::new(Loaded {
                table,
                modified,
                checked: Instant::now(),
            }),
        })
    }

    /// The grant of `certificate` in the current file.
    pub fn grant(&self, certificate: &PeerCertificate) -> Option<Grant> {
        self.refresh();
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.table.grant(certificate).cloned()
    }

    fn refresh(&self) {
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if current.checked.elapsed() < RELOAD_CHECK {
                return;
            }
        }
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        current.checked = Instant::now();
        if modified(&self.path) == current.modified {
            return;
        }
        match read(&self.path) {
            Ok((table, modified)) => {
                tracing::info!(path = %self.path.display(), principals = table.len(), "mutual-TLS principals reloaded");
                current.table = table;
                current.modified = modified;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the changed principals file does not load; keeping the previous one");
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read(path: &Path) -> Result<(PrincipalTable, Option<SystemTime>), AuthError> {
    let failed = |reason: String| {
        AuthError::Settings(format!(
            "mutual-TLS principals {}: {reason}",
            path.display()
        ))
    };
    let stamp = modified(path);
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let table = PrincipalTable::parse(&text).map_err(failed)?;
    Ok((table, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(cn: Option<&str>, dns: &[&str], uris: &[&str]) -> PeerCertificate {
        PeerCertificate {
            common_name: cn.map(str::to_string),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            uris: uris.iter().map(|s| s.to_string()).collect(),
            subject: "CN=x".into(),
        }
    }

    #[test]
    fn certificates_get_only_what_their_entry_grants() {
        let table = PrincipalTable::parse(
            r#"{"principals": [
                {"cn": "pos-1", "scopes": ["stock:adjust"], "locations": ["s1"]},
                {"dns": "ERP.example.com", "scopes": ["catalog:write", "stock:read"]},
                {"uri": "spiffe://x/oms", "scopes": ["stock:reserve"]}
            ]}"#,
        )
        .expect("parses");
        let pos = table
            .grant(&certificate(Some("pos-1"), &[], &[]))
            .expect("listed");
        assert_eq!(pos.scopes, BTreeSet::from([Scope::StockAdjust]));
        assert_eq!(pos.locations, Some(BTreeSet::from(["s1".to_string()])));
        let erp = table
            .grant(&certificate(Some("other"), &["erp.example.com"], &[]))
            .expect("listed by DNS name, case-insensitively");
        assert_eq!(erp.principal, "dns:erp.example.com");
        assert_eq!(erp.locations, None);
        assert!(
            table
                .grant(&certificate(None, &[], &["spiffe://x/oms"]))
                .is_some()
        );
        assert!(
            table
                .grant(&certificate(Some("pos-2"), &["pos-2.example.com"], &[]))
                .is_none()
        );
    }

    #[test]
    fn mistakes_are_refused_not_guessed() {
        for bad in [
            r#"{"principals": [{"scopes": ["admin"]}]}"#,
            r#"{"principals": [{"cn": "a", "dns": "b", "scopes": []}]}"#,
            r#"{"principals": [{"cn": "a", "scopes": ["stock:write"]}]}"#,
            r#"{"principals": [{"cn": "a", "scopes": []}, {"cn": "a", "scopes": []}]}"#,
            r#"{"principals": [{"cn": "", "scopes": []}]}"#,
            r#"{"principals": [{"cn": "a", "scopes": [], "extra": 1}]}"#,
            r#"[]"#,
        ] {
            assert!(PrincipalTable::parse(bad).is_err(), "{bad} must be refused");
        }
    }
}
