use super::*;
use ed25519_dalek::SigningKey;

fn jwk(seed: u8, kid: &str) -> Jwk {
    Jwk::public(kid, &SigningKey::from_bytes(&[seed; 32]).verifying_key())
}

fn enrol(kid: &str) -> Change {
    Change::EnrolGateway {
        gateway: String::from("gw-1"),
        site: String::from("site-1"),
        project: String::from("P-1"),
        key: jwk(1, kid),
        valid_from: None,
    }
}

const T: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

#[test]
fn times_are_written_in_rfc3339_utc_and_read_back_exactly() {
    assert_eq!(rfc3339(T), "2026-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(&rfc3339(T + 1)), Some(i128::from(T + 1)));
}

#[test]
fn enrolment_fills_in_its_time_and_refuses_a_second_enrolment_or_a_used_kid() {
    let mut r = Registry::default();
    let (c, last) = r.apply(&enrol("k1"), "alice", T, 0, false).expect("enrols");
    assert_eq!(c, enrol("k1"));
    assert_eq!(last, None);
    assert_eq!(r.gateways["gw-1"].enrolled, rfc3339(T));
    assert_eq!(r.kid_owner("k1").map(|g| g.gateway.as_str()), Some("gw-1"));
    let again = r.apply(&enrol("k2"), "alice", T, 0, false);
    assert!(
        matches!(again, Err(RegistryError::Conflict(_))),
        "{again:?}"
    );
    let mut other = Registry::default();
    let used = other.apply(&enrol("k1"), "alice", T, 0, true);
    assert!(matches!(used, Err(RegistryError::Conflict(_))), "{used:?}");
    assert!(
        other.gateways.is_empty(),
        "a refused change changes nothing"
    );
}

#[test]
fn a_private_key_a_missing_kid_and_a_bad_time_are_refused() {
    let mut r = Registry::default();
    let mut private = enrol("k1");
    if let Change::EnrolGateway { key, .. } = &mut private {
        key.d = Some(String::from("AAAA"));
    }
    assert!(matches!(
        r.apply(&private, "a", T, 0, false),
        Err(RegistryError::Invalid(_))
    ));
    let mut no_kid = enrol("k1");
    if let Change::EnrolGateway { key, .. } = &mut no_kid {
        key.kid = None;
    }
    assert!(matches!(
        r.apply(&no_kid, "a", T, 0, false),
        Err(RegistryError::Invalid(_))
    ));
    let mut bad_time = enrol("k1");
    if let Change::EnrolGateway { valid_from, .. } = &mut bad_time {
        *valid_from = Some(String::from("2026-02-30T00:00:00Z"));
    }
    assert!(matches!(
        r.apply(&bad_time, "a", T, 0, false),
        Err(RegistryError::Invalid(_))
    ));
}

#[test]
fn rotation_ends_the_old_key_where_the_new_one_starts() {
    let mut r = Registry::default();
    r.apply(&enrol("k1"), "alice", T, 0, false).expect("enrols");
    let rotate = Change::RotateGatewayKey {
        gateway: String::from("gw-1"),
        key: jwk(2, "k2"),
        at: None,
    };
    let (c, _) = r
        .apply(&rotate, "bob", T + 1000, 7, false)
        .expect("rotates");
    let at = rfc3339(T + 1000);
    assert_eq!(
        c,
        Change::RotateGatewayKey {
            gateway: String::from("gw-1"),
            key: jwk(2, "k2"),
            at: Some(at.clone()),
        },
        "the trail states the rotation time"
    );
    let g = &r.gateways["gw-1"];
    assert_eq!(g.keys[0].valid_until.as_deref(), Some(at.as_str()));
    assert_eq!(g.keys[1].valid_from.as_deref(), Some(at.as_str()));
    assert_eq!(g.keys[1].valid_until, None);
}

#[test]
fn revocation_records_who_when_why_and_the_last_seq_accepted_and_happens_once() {
    let mut r = Registry::default();
    r.apply(&enrol("k1"), "alice", T, 0, false).expect("enrols");
    let revoke = Change::RevokeGatewayKey {
        gateway: String::from("gw-1"),
        kid: String::from("k1"),
        reason: String::from("stolen"),
    };
    let (_, last) = r
        .apply(&revoke, "carol", T + 5, 41, false)
        .expect("revokes");
    assert_eq!(last, Some(41));
    let rev = r.gateways["gw-1"].keys[0].revoked.clone().expect("revoked");
    assert_eq!(
        (rev.by.as_str(), rev.reason.as_str(), rev.time),
        ("carol", "stolen", rfc3339(T + 5))
    );
    assert!(matches!(
        r.apply(&revoke, "carol", T + 6, 41, false),
        Err(RegistryError::Conflict(_))
    ));
    let unknown = Change::RevokeGatewayKey {
        gateway: String::from("gw-2"),
        kid: String::from("k1"),
        reason: String::new(),
    };
    assert!(matches!(
        r.apply(&unknown, "carol", T, 0, false),
        Err(RegistryError::NotFound(_))
    ));
}

#[test]
fn device_changes_keep_the_site_registry_valid_and_revocations_listed() {
    let mut r = Registry::default();
    let key = |seed| RegisteredKey {
        jwk: jwk(seed, "d"),
        valid_from: None,
        valid_until: None,
    };
    let set = Change::SetDevice {
        site: String::from("site-1"),
        device: RegisteredDevice {
            id: mrv_shared::ids::DeviceId::new("meter-1").expect("id"),
            unsigned: false,
            keys: vec![key(3)],
        },
    };
    r.apply(&set, "a", T, 0, false).expect("set");
    // A signing device without keys makes the site registry unusable: refused.
    let empty = Change::SetDevice {
        site: String::from("site-1"),
        device: RegisteredDevice {
            id: mrv_shared::ids::DeviceId::new("meter-2").expect("id"),
            unsigned: false,
            keys: vec![],
        },
    };
    assert!(matches!(
        r.apply(&empty, "a", T, 0, false),
        Err(RegistryError::Invalid(_))
    ));
    assert_eq!(r.sites["site-1"].registry.devices.len(), 1);
    let rotate = Change::RotateDeviceKey {
        site: String::from("site-1"),
        device: String::from("meter-1"),
        key: jwk(4, "d2"),
        at: Some(rfc3339(T + 60_000)),
    };
    r.apply(&rotate, "a", T + 1, 0, false).expect("rotates");
    let d = &r.sites["site-1"].registry.devices[0];
    assert_eq!(d.keys.len(), 2);
    assert_eq!(d.keys[0].valid_until, Some(rfc3339(T + 60_000)));
    let revoke = Change::RevokeDeviceKey {
        site: String::from("site-1"),
        device: String::from("meter-1"),
        x: jwk(3, "d").x,
        reason: String::from("tampered"),
    };
    r.apply(&revoke, "a", T + 2, 0, false).expect("revokes");
    assert_eq!(r.sites["site-1"].revoked.len(), 1);
    assert!(
        r.sites["site-1"].registry.trusted().is_ok(),
        "the revoked key stays listed, so earlier reports still verify offline"
    );
}

#[test]
fn a_recorded_trail_replays_to_the_same_registry() {
    let mut live = Registry::default();
    let mut trail = Vec::new();
    let changes = [
        enrol("k1"),
        Change::RotateGatewayKey {
            gateway: String::from("gw-1"),
            key: jwk(2, "k2"),
            at: None,
        },
        Change::RevokeGatewayKey {
            gateway: String::from("gw-1"),
            kid: String::from("k1"),
            reason: String::from("old"),
        },
    ];
    for (i, c) in changes.iter().enumerate() {
        let now = T + i as u64 * 1000;
        let taken = c.new_kid().is_some_and(|k| live.kid_owner(k).is_some());
        let (change, last) = live.apply(c, "alice", now, 3, taken).expect("applies");
        trail.push(AuditRecord {
            seq: i as u64 + 1,
            time: rfc3339(now),
            time_ms: now,
            actor: String::from("alice"),
            change,
            last_seq_accepted: last,
        });
    }
    let mut again = Registry::default();
    for r in &trail {
        again.replay(r).expect("replays");
    }
    assert_eq!(again, live);
    let text = serde_json::to_string(&trail[1]).expect("JSON");
    assert!(text.contains("\"action\":\"rotate_gateway_key\""), "{text}");
}
