//! The registry: which gateways may upload (enrolled with their site,
//! project and public keys, each key valid for a period and revocable) and,
//! per site, the device registry of docs/REPORT-FORMAT.md §10 that
//! verification checks reports against. Every change is an audited
//! [`Change`] recorded as an [`AuditRecord`] (who, when, what) in an
//! append-only trail. Pure: the archives ([`crate::archive`]) store it and
//! call [`Registry::apply`] and [`admit`] under their own exclusion.
//!
//! ## When a key is valid for a report (normative, RECEIVER-API.md §6)
//!
//! A report signed by gateway key `K` (its JWS `kid`) is accepted only if
//!
//! 1. `K` is enrolled for the report's `header.gateway`, whose enrolled site
//!    and project equal the report's `header.site` and `header.project`;
//! 2. `K`'s validity `[valid_from, valid_until)` covers the report's whole
//!    period `[start_ms, end_ms)` (`valid_from <= start_ms`,
//!    `end_ms <= valid_until`): the **period** is what the key attests, and
//!    it does not depend on when the upload arrives. A gateway that was
//!    offline uploads its backlog days later; a planned rotation at time
//!    `T` (old key `valid_until = T`, new key `valid_from = T`) must not
//!    invalidate the backlog signed before `T`, and the old key must not
//!    sign periods after `T`. The report carries no signing time of its
//!    own, and a receipt time would make the verdict depend on network
//!    luck, so neither is used for validity;
//! 3. `K` is **not revoked at acceptance**: a revocation (a compromised or
//!    lost key) takes effect when it commits and applies whatever period a
//!    report claims, because a thief holding the key can sign any period.
//!    Reports accepted before the revocation stay accepted; the revocation
//!    records the last seq of the gateway accepted before it
//!    (`last_seq_accepted`), so an auditor knows which reports were
//!    accepted under the key before it was withdrawn. A revocation cannot
//!    be backdated (it would retroactively change accepted reports).
//!
//! Device keys work the same way: a listed device key must cover the
//! report's period (REPORT-FORMAT.md §10), and a revoked device key
//! (`device_key_revoked`) makes every report that lists it refused from the
//! revocation's commit on.
//!
//! Acceptance re-checks these rules inside the transaction (PostgreSQL:
//! with the gateway's and the site's registry rows share-locked; files:
//! under the archive's mutex), so a change that commits while an upload is
//! being verified either precedes the acceptance (the upload is refused)
//! or follows it: no report signed by a revoked key is accepted once the
//! revocation has committed.
//!
//! ## Bootstrap
//!
//! Gateway keys and a device registry given on the receiver's command line
//! ([`crate::verification::Trust`]) still work: a key id the registry does
//! not know is verified against them (and binds to the first gateway that
//! uses it, as before the registry), and a site the registry has no
//! devices for is checked against the command-line device registry. The
//! registry always wins: a gateway that is enrolled signs only with its
//! enrolled keys. A key id known nowhere is `unknown_kid` when the receiver
//! has command-line keys (any gateway may sign with those), and
//! `unknown_gateway` for a gateway that is not enrolled otherwise.

use crate::verification::Trust;
use mrv_shared::ids::{SiteId, validate_id};
use mrv_shared::report::VerifiedReport;
use mrv_shared::report::jwk::{Jwk, unb64};
use mrv_shared::report::registry::{DeviceRegistry, RegisteredDevice, RegisteredKey, rfc3339_ms};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a registry change was refused (the registry is unchanged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The change names something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the registry (already enrolled, a key id
    /// in use, already revoked).
    #[error("{0}")]
    Conflict(String),
    /// The change is malformed (bad id, key, time).
    #[error("{0}")]
    Invalid(String),
}

impl RegistryError {
    /// Stable short reason.
    pub fn label(&self) -> &'static str {
        match self {
            RegistryError::NotFound(_) => "not_found",
            RegistryError::Conflict(_) => "conflict",
            RegistryError::Invalid(_) => "invalid",
        }
    }
}

/// A revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// When it was recorded (RFC 3339 UTC); effective from its commit.
    pub time: String,
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
    /// The gateway's highest seq accepted before it (gateway keys; 0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq_accepted: Option<u64>,
}

/// One key of a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayKey {
    /// The public key (`kid` set: the JWS `kid` it signs under).
    pub jwk: Jwk,
    /// RFC 3339 time from which it signs periods (`None`: no bound).
    #[serde(default)]
    pub valid_from: Option<String>,
    /// RFC 3339 time from which it no longer signs periods (`None`: no end).
    #[serde(default)]
    pub valid_until: Option<String>,
    /// Set when revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

impl GatewayKey {
    /// Its key id.
    pub fn kid(&self) -> &str {
        self.jwk.kid.as_deref().unwrap_or("")
    }
}

/// An enrolled gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayRecord {
    /// Gateway id (`header.gateway`).
    pub gateway: String,
    /// Its site (`header.site`).
    pub site: String,
    /// Its project (`header.project`).
    pub project: String,
    /// When it was enrolled (RFC 3339).
    pub enrolled: String,
    /// Its keys, oldest first.
    pub keys: Vec<GatewayKey>,
}

impl GatewayRecord {
    /// The key `kid`.
    pub fn key(&self, kid: &str) -> Option<&GatewayKey> {
        self.keys.iter().find(|k| k.kid() == kid)
    }
}

/// A revoked device key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedDeviceKey {
    /// Device id.
    pub device: String,
    /// The key's `x` (base64url).
    pub x: String,
    /// The revocation.
    pub revocation: Revocation,
}

/// The device registry of one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteDevices {
    /// Site id.
    pub site: String,
    /// Its devices (REPORT-FORMAT.md §10: keys with validity, or unsigned).
    pub registry: DeviceRegistry,
    /// Revoked device keys (still listed in `registry`, so reports accepted
    /// before the revocation still verify offline).
    #[serde(default)]
    pub revoked: Vec<RevokedDeviceKey>,
}

impl SiteDevices {
    fn device_mut(&mut self, id: &str) -> Option<&mut RegisteredDevice> {
        self.registry
            .devices
            .iter_mut()
            .find(|d| d.id.as_str() == id)
    }
}

/// One audited change of the registry. Times are RFC 3339 UTC; an omitted
/// time means "when the change is recorded" and is filled in, so the trail
/// states every time explicitly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Enrol a gateway with its first key.
    EnrolGateway {
        /// Gateway id.
        gateway: String,
        /// Site.
        site: String,
        /// Project.
        project: String,
        /// Public JWK with a `kid` unused so far.
        key: Jwk,
        /// Start of the key's validity (default: no bound, so a backlog of
        /// periods before the enrolment is accepted).
        #[serde(default)]
        valid_from: Option<String>,
    },
    /// Rotate: the gateway's keys still open-ended end at `at`, `key`
    /// starts there.
    RotateGatewayKey {
        /// Gateway id.
        gateway: String,
        /// The new public JWK (new `kid`).
        key: Jwk,
        /// Rotation time (default: now).
        #[serde(default)]
        at: Option<String>,
    },
    /// Revoke a gateway key, effective at once.
    RevokeGatewayKey {
        /// Gateway id.
        gateway: String,
        /// The key id.
        kid: String,
        /// Why.
        reason: String,
    },
    /// Add or replace one device of a site's registry.
    SetDevice {
        /// Site.
        site: String,
        /// The device, as in REPORT-FORMAT.md §10.
        device: RegisteredDevice,
    },
    /// Rotate a device key: its open-ended keys end at `at`, `key` starts.
    RotateDeviceKey {
        /// Site.
        site: String,
        /// Device id.
        device: String,
        /// The new public JWK.
        key: Jwk,
        /// Rotation time (default: now).
        #[serde(default)]
        at: Option<String>,
    },
    /// Revoke a device key (by its `x`), effective at once.
    RevokeDeviceKey {
        /// Site.
        site: String,
        /// Device id.
        device: String,
        /// The key's `x` (base64url).
        x: String,
        /// Why.
        reason: String,
    },
    /// Replace a site's whole device registry (REPORT-FORMAT.md §10 file).
    ImportDevices {
        /// Site.
        site: String,
        /// The registry.
        registry: DeviceRegistry,
    },
}

impl Change {
    /// The gateway whose record the change touches.
    pub fn gateway(&self) -> Option<&str> {
        match self {
            Change::EnrolGateway { gateway, .. }
            | Change::RotateGatewayKey { gateway, .. }
            | Change::RevokeGatewayKey { gateway, .. } => Some(gateway),
            _ => None,
        }
    }
    /// The site whose device registry the change touches.
    pub fn site(&self) -> Option<&str> {
        match self {
            Change::SetDevice { site, .. }
            | Change::RotateDeviceKey { site, .. }
            | Change::RevokeDeviceKey { site, .. }
            | Change::ImportDevices { site, .. } => Some(site),
            _ => None,
        }
    }
    /// The key id the change introduces (must be unused).
    pub fn new_kid(&self) -> Option<&str> {
        match self {
            Change::EnrolGateway { key, .. } | Change::RotateGatewayKey { key, .. } => {
                key.kid.as_deref()
            }
            _ => None,
        }
    }
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the trail, from 1, gap-free.
    pub seq: u64,
    /// When it was recorded (RFC 3339 UTC).
    pub time: String,
    /// The same, Unix ms.
    pub time_ms: u64,
    /// Who (the authenticated actor).
    pub actor: String,
    /// What, with every time filled in.
    pub change: Change,
    /// For a gateway key revocation: the gateway's last seq accepted
    /// before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq_accepted: Option<u64>,
}

/// RFC 3339 UTC (millisecond precision) of Unix ms `ms`.
pub fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000Z"))
}

fn check_time(t: &Option<String>, what: &str) -> Result<Option<i128>, RegistryError> {
    match t {
        None => Ok(None),
        Some(s) => rfc3339_ms(s)
            .map(Some)
            .ok_or_else(|| RegistryError::Invalid(format!("{what} {s:?} is not an RFC 3339 time"))),
    }
}

fn check_public(key: &Jwk, need_kid: bool) -> Result<(), RegistryError> {
    if key.d.is_some() {
        return Err(RegistryError::Invalid(String::from(
            "the JWK holds a private key (\"d\"): give the public key only",
        )));
    }
    key.verifying_key()
        .map_err(|e| RegistryError::Invalid(format!("key: {e}")))?;
    if need_kid {
        let kid = key.kid.as_deref().unwrap_or("");
        if kid.is_empty() || kid.len() > 128 || kid.chars().any(char::is_control) {
            return Err(RegistryError::Invalid(String::from(
                "a gateway key needs a \"kid\" (1 to 128 characters, no control characters)",
            )));
        }
    }
    Ok(())
}

fn id_ok(id: &str, what: &str) -> Result<(), RegistryError> {
    validate_id(id).map_err(|e| RegistryError::Invalid(format!("{what} {id:?}: {e}")))?;
    if id.starts_with('.') {
        return Err(RegistryError::Invalid(format!(
            "{what} {id:?} starts with '.'"
        )));
    }
    Ok(())
}

/// Ends every open-ended key at `at` (a rotation); keys ending later are
/// cut back too, so no two keys overlap after `at`.
fn end_keys_at<'a>(keys: impl Iterator<Item = (&'a mut Option<String>, Option<i128>)>, at: &str) {
    let at_ms = rfc3339_ms(at);
    for (until, until_ms) in keys {
        if until_ms.is_none_or(|u| at_ms.is_some_and(|a| u > a)) {
            *until = Some(at.to_string());
        }
    }
}

/// The registry (or the part of it one change touches: the archives load
/// only the subjects of a change and its key id's owner).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Enrolled gateways by id.
    pub gateways: BTreeMap<String, GatewayRecord>,
    /// Device registries by site.
    pub sites: BTreeMap<String, SiteDevices>,
}

impl Registry {
    /// The gateway owning key id `kid`.
    pub fn kid_owner(&self, kid: &str) -> Option<&GatewayRecord> {
        self.gateways.values().find(|g| g.key(kid).is_some())
    }

    /// Applies `change` by `actor` at `now_ms`. `last_seq` is the chain
    /// head of the change's gateway (for a revocation's record), and
    /// `kid_taken` says whether the key id the change introduces belongs
    /// to any gateway already (the archive knows it even when it loaded
    /// only a part of the registry). Returns the change with every time
    /// filled in, as it goes into the trail.
    /// A refused change leaves the registry as it was.
    pub fn apply(
        &mut self,
        change: &Change,
        actor: &str,
        now_ms: u64,
        last_seq: u64,
        kid_taken: bool,
    ) -> Result<(Change, Option<u64>), RegistryError> {
        // Gateway changes check everything before they touch the record;
        // site changes check the site's registry after the edit, so keep
        // the site's previous state to put back.
        let site_before = change
            .site()
            .map(|s| (s.to_string(), self.sites.get(s).cloned()));
        let r = self.apply_unchecked(change, actor, now_ms, last_seq, kid_taken);
        if r.is_err()
            && let Some((site, before)) = site_before
        {
            match before {
                Some(b) => {
                    self.sites.insert(site, b);
                }
                None => {
                    self.sites.remove(&site);
                }
            }
        }
        r
    }

    fn apply_unchecked(
        &mut self,
        change: &Change,
        actor: &str,
        now_ms: u64,
        last_seq: u64,
        kid_taken: bool,
    ) -> Result<(Change, Option<u64>), RegistryError> {
        let now = rfc3339(now_ms);
        let mut out = change.clone();
        let mut last_seq_accepted = None;
        match &mut out {
            Change::EnrolGateway {
                gateway,
                site,
                project,
                key,
                valid_from,
            } => {
                id_ok(gateway, "gateway")?;
                SiteId::new(site).map_err(|e| RegistryError::Invalid(format!("site: {e}")))?;
                if project.is_empty() {
                    return Err(RegistryError::Invalid(String::from("empty project")));
                }
                check_public(key, true)?;
                check_time(valid_from, "valid_from")?;
                if self.gateways.contains_key(gateway.as_str()) {
                    return Err(RegistryError::Conflict(format!(
                        "gateway {gateway:?} is already enrolled (rotate its key instead)"
                    )));
                }
                if kid_taken {
                    return Err(RegistryError::Conflict(format!(
                        "key id {:?} is already enrolled",
                        key.kid.as_deref().unwrap_or("")
                    )));
                }
                self.gateways.insert(
                    gateway.clone(),
                    GatewayRecord {
                        gateway: gateway.clone(),
                        site: site.clone(),
                        project: project.clone(),
                        enrolled: now.clone(),
                        keys: vec![GatewayKey {
                            jwk: key.clone(),
                            valid_from: valid_from.clone(),
                            valid_until: None,
                            revoked: None,
                        }],
                    },
                );
            }
            Change::RotateGatewayKey { gateway, key, at } => {
                check_public(key, true)?;
                let at = at.get_or_insert_with(|| now.clone()).clone();
                check_time(&Some(at.clone()), "at")?;
                if kid_taken {
                    return Err(RegistryError::Conflict(format!(
                        "key id {:?} is already enrolled",
                        key.kid.as_deref().unwrap_or("")
                    )));
                }
                let g = self.gateways.get_mut(gateway.as_str()).ok_or_else(|| {
                    RegistryError::NotFound(format!("gateway {gateway:?} is not enrolled"))
                })?;
                end_keys_at(
                    g.keys.iter_mut().map(|k| {
                        let until_ms = k.valid_until.as_deref().and_then(rfc3339_ms);
                        (&mut k.valid_until, until_ms)
                    }),
                    &at,
                );
                g.keys.push(GatewayKey {
                    jwk: key.clone(),
                    valid_from: Some(at),
                    valid_until: None,
                    revoked: None,
                });
            }
            Change::RevokeGatewayKey {
                gateway,
                kid,
                reason,
            } => {
                let g = self.gateways.get_mut(gateway.as_str()).ok_or_else(|| {
                    RegistryError::NotFound(format!("gateway {gateway:?} is not enrolled"))
                })?;
                let k = g
                    .keys
                    .iter_mut()
                    .find(|k| k.kid() == kid.as_str())
                    .ok_or_else(|| {
                        RegistryError::NotFound(format!("gateway {gateway:?} has no key {kid:?}"))
                    })?;
                if k.revoked.is_some() {
                    return Err(RegistryError::Conflict(format!(
                        "key {kid:?} is already revoked"
                    )));
                }
                k.revoked = Some(Revocation {
                    time: now.clone(),
                    reason: reason.clone(),
                    by: actor.to_string(),
                    last_seq_accepted: Some(last_seq),
                });
                last_seq_accepted = Some(last_seq);
            }
            Change::SetDevice { site, device } => {
                SiteId::new(site).map_err(|e| RegistryError::Invalid(format!("site: {e}")))?;
                for k in &device.keys {
                    check_public(&k.jwk, false)?;
                }
                let entry = self.site_entry(site);
                entry.registry.devices.retain(|d| d.id != device.id);
                entry.registry.devices.push(device.clone());
                entry.registry.devices.sort_by(|a, b| a.id.cmp(&b.id));
                check_site(entry)?;
            }
            Change::RotateDeviceKey {
                site,
                device,
                key,
                at,
            } => {
                check_public(key, false)?;
                let at = at.get_or_insert_with(|| now.clone()).clone();
                check_time(&Some(at.clone()), "at")?;
                let s = self.sites.get_mut(site.as_str()).ok_or_else(|| {
                    RegistryError::NotFound(format!("site {site:?} has no device registry"))
                })?;
                let d = s.device_mut(device).ok_or_else(|| {
                    RegistryError::NotFound(format!("site {site:?} has no device {device:?}"))
                })?;
                if d.unsigned {
                    return Err(RegistryError::Conflict(format!(
                        "device {device:?} is registered unsigned (set it with keys instead)"
                    )));
                }
                end_keys_at(
                    d.keys.iter_mut().map(|k| {
                        let until_ms = k.valid_until.as_deref().and_then(rfc3339_ms);
                        (&mut k.valid_until, until_ms)
                    }),
                    &at,
                );
                d.keys.push(RegisteredKey {
                    jwk: key.clone(),
                    valid_from: Some(at),
                    valid_until: None,
                });
                check_site(s)?;
            }
            Change::RevokeDeviceKey {
                site,
                device,
                x,
                reason,
            } => {
                let s = self.sites.get_mut(site.as_str()).ok_or_else(|| {
                    RegistryError::NotFound(format!("site {site:?} has no device registry"))
                })?;
                let d = s.device_mut(device).ok_or_else(|| {
                    RegistryError::NotFound(format!("site {site:?} has no device {device:?}"))
                })?;
                if !d.keys.iter().any(|k| k.jwk.x == *x) {
                    return Err(RegistryError::NotFound(format!(
                        "device {device:?} has no key with x {x:?}"
                    )));
                }
                if s.revoked.iter().any(|r| r.device == *device && r.x == *x) {
                    return Err(RegistryError::Conflict(format!(
                        "that key of {device:?} is already revoked"
                    )));
                }
                s.revoked.push(RevokedDeviceKey {
                    device: device.clone(),
                    x: x.clone(),
                    revocation: Revocation {
                        time: now.clone(),
                        reason: reason.clone(),
                        by: actor.to_string(),
                        last_seq_accepted: None,
                    },
                });
            }
            Change::ImportDevices { site, registry } => {
                SiteId::new(site).map_err(|e| RegistryError::Invalid(format!("site: {e}")))?;
                for d in &registry.devices {
                    for k in &d.keys {
                        check_public(&k.jwk, false)?;
                    }
                }
                let mut devices = registry.devices.clone();
                devices.sort_by(|a, b| a.id.cmp(&b.id));
                let entry = self.site_entry(site);
                entry.registry.devices = devices;
                // Revocations of keys no longer listed are kept (history).
                check_site(entry)?;
            }
        }
        Ok((out, last_seq_accepted))
    }

    fn site_entry(&mut self, site: &str) -> &mut SiteDevices {
        self.sites
            .entry(site.to_string())
            .or_insert_with(|| SiteDevices {
                site: site.to_string(),
                registry: DeviceRegistry::default(),
                revoked: Vec::new(),
            })
    }

    /// Replays a recorded change (the file archive rebuilds the registry
    /// from its trail this way).
    pub fn replay(&mut self, r: &AuditRecord) -> Result<(), RegistryError> {
        let taken = r
            .change
            .new_kid()
            .is_some_and(|k| self.kid_owner(k).is_some());
        let (again, _) = self.apply(
            &r.change,
            &r.actor,
            r.time_ms,
            r.last_seq_accepted.unwrap_or(0),
            taken,
        )?;
        if again != r.change {
            return Err(RegistryError::Invalid(format!(
                "audit record {} does not replay to itself",
                r.seq
            )));
        }
        Ok(())
    }
}

fn check_site(s: &SiteDevices) -> Result<(), RegistryError> {
    s.registry
        .trusted()
        .map(|_| ())
        .map_err(|e| RegistryError::Invalid(e.to_string()))
}

/// What an upload's admission needs from the registry: the record owning
/// the report's key id (if any), the record of the gateway the report
/// claims (if enrolled), and the device registry of its site (if any).
#[derive(Debug, Clone, Default)]
pub struct RegistryView {
    /// The gateway that owns the JWS `kid`.
    pub kid_owner: Option<GatewayRecord>,
    /// The gateway the report names, when enrolled.
    pub claimed: Option<GatewayRecord>,
    /// The device registry of the report's site.
    pub site: Option<SiteDevices>,
}

impl RegistryView {
    /// The view of `registry` for key id `kid`, gateway `gateway` and site
    /// `site`.
    pub fn of(registry: &Registry, kid: &str, gateway: &str, site: &str) -> RegistryView {
        RegistryView {
            kid_owner: registry.kid_owner(kid).cloned(),
            claimed: registry.gateways.get(gateway).cloned(),
            site: registry.sites.get(site).cloned(),
        }
    }
}

/// Why an upload is refused by the registry (422, nothing stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable short reason (`unknown_gateway`, `unknown_kid`,
    /// `kid_gateway_mismatch`, `site_mismatch`, `project_mismatch`,
    /// `key_revoked`, `key_not_valid`, `device_key_revoked`, or a device
    /// reason of REPORT-FORMAT.md §10).
    pub reason: &'static str,
    /// Detail.
    pub detail: String,
}

fn refuse(reason: &'static str, detail: String) -> Refusal {
    Refusal { reason, detail }
}

/// Where the key that verifies a report comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The registry (the gateway's enrolled key).
    Registry([u8; 32]),
    /// The command-line keys (bootstrap).
    Bootstrap([u8; 32]),
}

impl KeySource {
    /// The key's bytes.
    pub fn bytes(&self) -> [u8; 32] {
        match self {
            KeySource::Registry(b) | KeySource::Bootstrap(b) => *b,
        }
    }
}

/// The key to verify a report's JWS with, before verification: `kid` from
/// the JWS header, `claimed` the gateway its (not yet verified) payload
/// names.
pub fn gateway_key(
    view: &RegistryView,
    trust: &Trust,
    kid: &str,
    claimed: &str,
) -> Result<KeySource, Refusal> {
    if let Some(owner) = &view.kid_owner {
        let k = owner.key(kid).expect("the owner holds the kid");
        let vk = k.jwk.verifying_key().map_err(|e| {
            refuse(
                "bad_key",
                format!("the registry's key {kid:?} is unusable: {e}"),
            )
        })?;
        return Ok(KeySource::Registry(vk.to_bytes()));
    }
    if let Some(c) = &view.claimed {
        return Err(refuse(
            "unknown_kid",
            format!(
                "gateway {claimed:?} is enrolled and signs only with its registered keys ({}); {kid:?} is not one of them",
                c.keys
                    .iter()
                    .map(GatewayKey::kid)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if let Some(vk) = trust.keys.get(kid) {
        return Ok(KeySource::Bootstrap(vk.to_bytes()));
    }
    if !trust.keys.is_empty() {
        // With bootstrap keys any gateway may sign with one of them: what
        // is unknown is the key.
        return Err(refuse(
            "unknown_kid",
            format!(
                "key id {kid:?} is neither enrolled nor one of the receiver's command-line keys, and gateway {claimed:?} is not enrolled"
            ),
        ));
    }
    Err(refuse(
        "unknown_gateway",
        format!("gateway {claimed:?} is not enrolled (and key id {kid:?} is unknown)"),
    ))
}

/// The registry's verdict on a report whose JWS verified with `used` (the
/// key [`gateway_key`] gave): the rules of the module doc, then the site's
/// devices. The archives call it again inside the acceptance's
/// transaction with a fresh view.
pub fn admit(
    view: &RegistryView,
    trust: &Trust,
    v: &VerifiedReport,
    used: &KeySource,
) -> Result<(), Refusal> {
    let h = &v.report.header;
    let now = gateway_key(view, trust, &v.kid, &h.gateway)?;
    if now.bytes() != used.bytes() {
        return Err(refuse(
            "registry_changed",
            format!(
                "key id {:?} changed in the registry while the report was verified; offer it again",
                v.kid
            ),
        ));
    }
    if let Some(owner) = &view.kid_owner {
        if owner.gateway != h.gateway {
            return Err(refuse(
                "kid_gateway_mismatch",
                format!(
                    "key {:?} is enrolled for gateway {:?}, not {:?}",
                    v.kid, owner.gateway, h.gateway
                ),
            ));
        }
        if owner.site != h.site.as_str() {
            return Err(refuse(
                "site_mismatch",
                format!(
                    "gateway {:?} is enrolled at site {:?}; the report names {:?}",
                    owner.gateway,
                    owner.site,
                    h.site.as_str()
                ),
            ));
        }
        if owner.project != h.project {
            return Err(refuse(
                "project_mismatch",
                format!(
                    "gateway {:?} is enrolled in project {:?}; the report names {:?}",
                    owner.gateway, owner.project, h.project
                ),
            ));
        }
        let k = owner.key(&v.kid).expect("the owner holds the kid");
        if let Some(r) = &k.revoked {
            return Err(refuse(
                "key_revoked",
                format!(
                    "key {:?} of {:?} was revoked at {} by {} ({}); nothing signed by it is accepted since",
                    v.kid, owner.gateway, r.time, r.by, r.reason
                ),
            ));
        }
        let from = k.valid_from.as_deref().and_then(rfc3339_ms);
        let until = k.valid_until.as_deref().and_then(rfc3339_ms);
        let p = h.period;
        if from.is_some_and(|f| f > i128::from(p.start_ms))
            || until.is_some_and(|u| i128::from(p.end_ms) > u)
        {
            return Err(refuse(
                "key_not_valid",
                format!(
                    "key {:?} is valid for periods within [{}, {}); the report's period is [{}, {})",
                    v.kid,
                    k.valid_from.as_deref().unwrap_or("-inf"),
                    k.valid_until.as_deref().unwrap_or("+inf"),
                    rfc3339(p.start_ms),
                    rfc3339(p.end_ms)
                ),
            ));
        }
    }
    match &view.site {
        Some(s) => {
            for d in &v.report.devices {
                if let mrv_shared::report::model::Signing::Ed25519 { x, .. } = &d.signing
                    && let Some(r) = s
                        .revoked
                        .iter()
                        .find(|r| r.device == d.id.as_str() && r.x == *x)
                {
                    return Err(refuse(
                        "device_key_revoked",
                        format!(
                            "the key the report lists for device {} was revoked at {} by {} ({})",
                            d.id, r.revocation.time, r.revocation.by, r.revocation.reason
                        ),
                    ));
                }
            }
            let t = s
                .registry
                .trusted()
                .map_err(|e| refuse("registry_unusable", format!("site {:?}: {e}", s.site)))?;
            t.check(&v.report)
                .map_err(|e| refuse(e.label(), e.to_string()))
        }
        None => trust
            .devices
            .check(&v.report)
            .map_err(|e| refuse(e.label(), e.to_string())),
    }
}

/// The `x` of a JWK given as a revocation target: the JWK's `x`, checked.
pub fn key_x(jwk: &Jwk) -> Result<String, RegistryError> {
    let raw = unb64(&jwk.x).map_err(|e| RegistryError::Invalid(format!("key: {e}")))?;
    if raw.len() != 32 {
        return Err(RegistryError::Invalid(String::from(
            "key: x is not 32 bytes",
        )));
    }
    Ok(jwk.x.clone())
}

#[cfg(test)]
mod tests;
