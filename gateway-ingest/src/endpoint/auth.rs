//! Who may connect, and what a credential may touch (pure).
//!
//! - No accounts configured: anyone may connect (only allowed on loopback,
//!   see `config::mqtt`), as the whole site.
//! - Otherwise a user name and password are required. A site account may
//!   publish for any device of the site; an account bound to a device
//!   (`[[mqtt.users]] device = "..."`) may publish only on
//!   `mrv/<site>/<device>/up` and subscribe only to `mrv/<site>/<device>/ack`.
//! - Third-party topics (`[[mapping]]`, [`crate::mapping`]): a topic matched
//!   by a mapping's filter may be published on by any logged-in client,
//!   device-bound accounts included (a Shelly publishes on `shellies/...`,
//!   not on our up topic). Which device such a message is for is only known
//!   once the payload is mapped, so the intake refuses a mapped frame whose
//!   device is not the account's bound device (`not_bound_device`).
//!
//! Passwords are compared through their SHA-256 digests in constant time, so
//! the comparison time does not tell how much of a guess was right.

use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::wire::topic;
use sha2::{Digest, Sha256};

/// One account.
#[derive(Clone)]
pub struct Account {
    username: String,
    password_sha256: [u8; 32],
    device: Option<DeviceId>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// An account; `device` binds it to one device's topics.
    pub fn new(username: &str, password: &str, device: Option<DeviceId>) -> Self {
        Self {
            username: username.to_string(),
            password_sha256: Sha256::digest(password.as_bytes()).into(),
            device,
        }
    }
}

/// What a logged-in client may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Any device of the site (a site account, or no accounts configured).
    Site,
    /// One device only.
    Device(DeviceId),
}

impl Principal {
    /// The bound device, if any.
    pub fn bound_device(&self) -> Option<&DeviceId> {
        match self {
            Principal::Site => None,
            Principal::Device(d) => Some(d),
        }
    }

    /// May this client publish on `topic_name`? A site principal may publish
    /// anywhere (admission refuses topics it does not know, with a counted
    /// reason); a device principal only on its own up topic, or on a topic
    /// one of `mapped_filters` (third-party mappings) matches.
    pub fn may_publish(&self, site: &SiteId, topic_name: &str, mapped_filters: &[String]) -> bool {
        match self {
            Principal::Site => true,
            Principal::Device(d) => {
                topic::up_topic(site, d) == topic_name
                    || mapped_filters
                        .iter()
                        .any(|f| crate::topic_filter::matches(topic_name, f))
            }
        }
    }

    /// May this client receive `device`'s acks?
    pub fn may_use_device(&self, device: &DeviceId) -> bool {
        match self {
            Principal::Site => true,
            Principal::Device(d) => d == device,
        }
    }
}

/// Login refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("wrong user name or password")]
pub struct AuthRefused;

/// Decides logins.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    accounts: Vec<Account>,
    mapped_filters: Vec<String>,
}

impl Authenticator {
    /// With these accounts (none: open, as the whole site).
    pub fn new(accounts: Vec<Account>) -> Self {
        Self {
            accounts,
            mapped_filters: Vec::new(),
        }
    }

    /// Also lets device-bound accounts publish on topics these third-party
    /// mapping filters match (see the module doc).
    pub fn with_mapped_filters(mut self, filters: Vec<String>) -> Self {
        self.mapped_filters = filters;
        self
    }

    /// May `principal` publish on `topic_name` (see [`Principal::may_publish`])?
    pub fn may_publish(&self, principal: &Principal, site: &SiteId, topic_name: &str) -> bool {
        principal.may_publish(site, topic_name, &self.mapped_filters)
    }

    /// Checks a login.
    pub fn check(
        &self,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Principal, AuthRefused> {
        if self.accounts.is_empty() {
            return Ok(Principal::Site);
        }
        let (Some(u), Some(p)) = (username, password) else {
            return Err(AuthRefused);
        };
        let digest: [u8; 32] = Sha256::digest(p.as_bytes()).into();
        // Look at every account, so timing does not tell which names exist.
        let mut found = None;
        for a in &self.accounts {
            let same = a.username.as_bytes() == u.as_bytes();
            let pw = a
                .password_sha256
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0;
            if same && pw && found.is_none() {
                found = Some(a);
            }
        }
        match found {
            Some(a) => Ok(a.device.clone().map_or(Principal::Site, Principal::Device)),
            None => Err(AuthRefused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_accounts_everyone_is_the_site() {
        assert_eq!(
            Authenticator::default().check(None, None),
            Ok(Principal::Site)
        );
    }

    #[test]
    fn with_accounts_a_login_is_required_and_checked() {
        let d = DeviceId::new("d1").expect("valid");
        let a = Authenticator::new(vec![
            Account::new("gw", "pw", None),
            Account::new("d1", "x", Some(d.clone())),
        ]);
        assert_eq!(a.check(None, None), Err(AuthRefused));
        assert_eq!(a.check(Some("gw"), Some("nope")), Err(AuthRefused));
        assert_eq!(a.check(Some("nobody"), Some("pw")), Err(AuthRefused));
        assert_eq!(a.check(Some("gw"), Some("pw")), Ok(Principal::Site));
        assert_eq!(a.check(Some("d1"), Some("x")), Ok(Principal::Device(d)));
    }

    #[test]
    fn a_device_principal_publishes_only_on_its_up_topic() {
        let site = SiteId::new("s").expect("valid");
        let p = Principal::Device(DeviceId::new("d1").expect("valid"));
        assert!(p.may_publish(&site, "mrv/s/d1/up", &[]));
        assert!(!p.may_publish(&site, "mrv/s/d2/up", &[]));
        assert!(!p.may_publish(&site, "mrv/s/d1/ack", &[]));
        assert!(!p.may_publish(&site, "tele/plug/SENSOR", &[]));
        assert!(Principal::Site.may_publish(&site, "anything/else", &[]));
    }

    #[test]
    fn a_device_principal_may_publish_on_mapped_third_party_topics() {
        let site = SiteId::new("s").expect("valid");
        let d = DeviceId::new("d1").expect("valid");
        let a = Authenticator::new(vec![Account::new("d1", "x", Some(d.clone()))])
            .with_mapped_filters(vec!["tele/+/SENSOR".into()]);
        let p = Principal::Device(d);
        assert!(a.may_publish(&p, &site, "tele/plug-1/SENSOR"));
        assert!(!a.may_publish(&p, &site, "tele/plug-1/STATE"));
        assert!(!a.may_publish(&p, &site, "mrv/s/d2/up"));
    }

    #[test]
    fn a_topic_starting_with_a_multibyte_character_is_refused_not_a_panic() {
        // rumqttc's matcher sliced `topic[..1]` and panicked (issue 14 fuzzing).
        let site = SiteId::new("s").expect("valid");
        let d = DeviceId::new("d1").expect("valid");
        let a = Authenticator::new(vec![Account::new("d1", "x", Some(d.clone()))])
            .with_mapped_filters(vec!["tele/+/SENSOR".into()]);
        let p = Principal::Device(d);
        assert!(!a.may_publish(&p, &site, "\u{7df}"));
        assert!(!a.may_publish(&p, &site, "é/plug-1/SENSOR"));
        assert!(a.may_publish(&p, &site, "tele/é/SENSOR"));
    }
}
