//! Application acks to the connections that subscribed to them.
//!
//! The writer produces one ack per device per group commit; a device's
//! connection subscribes to `mrv/<site>/<device>/ack`. Each connection has
//! one [`AckSlot`]: per device only the newest ack waits there (acks are
//! cumulative, a newer one supersedes an older one), so a connection that
//! does not read cannot make memory grow.

use crate::ingest::admit::WireFormat;
use crate::ingest::writer::AckOut;
use bytes::Bytes;
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::wire::{binary, json, topic};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Acks waiting to be written to one connection.
#[derive(Debug, Default)]
pub struct AckSlot {
    waiting: Mutex<Vec<(DeviceId, String, Bytes)>>,
    /// Woken when an ack is put in.
    pub notify: Notify,
}

impl AckSlot {
    fn put(&self, device: &DeviceId, topic: String, payload: Bytes) {
        let mut w = self
            .waiting
            .lock()
            .expect("ack slot lock is never poisoned");
        match w.iter_mut().find(|(d, _, _)| d == device) {
            Some(e) => e.2 = payload,
            None => w.push((device.clone(), topic, payload)),
        }
        drop(w);
        self.notify.notify_one();
    }

    /// Takes every waiting ack: (topic, payload).
    pub fn take(&self) -> Vec<(String, Bytes)> {
        let mut w = self
            .waiting
            .lock()
            .expect("ack slot lock is never poisoned");
        let out = w.drain(..).map(|(_, t, p)| (t, p)).collect();
        if w.capacity() > 4 {
            w.shrink_to_fit();
        }
        out
    }
}

/// One subscribed connection: its id and its slot.
type Route = (u64, Arc<AckSlot>);

/// Which connections want which device's acks.
#[derive(Debug)]
pub struct AckRoutes {
    site: SiteId,
    routes: Mutex<HashMap<DeviceId, Vec<Route>>>,
}

impl AckRoutes {
    /// For `site`.
    pub fn new(site: SiteId) -> Self {
        Self {
            site,
            routes: Mutex::new(HashMap::new()),
        }
    }

    /// Connection `conn` wants `device`'s acks.
    pub fn route(&self, device: DeviceId, conn: u64, slot: &Arc<AckSlot>) {
        let mut r = self.routes.lock().expect("routes lock is never poisoned");
        let v = r.entry(device).or_default();
        if !v.iter().any(|(c, _)| *c == conn) {
            v.push((conn, slot.clone()));
        }
    }

    /// Connection `conn` no longer wants `device`'s acks.
    pub fn unroute(&self, device: &DeviceId, conn: u64) {
        let mut r = self.routes.lock().expect("routes lock is never poisoned");
        if let Some(v) = r.get_mut(device) {
            v.retain(|(c, _)| *c != conn);
            if v.is_empty() {
                r.remove(device);
            }
        }
    }

    /// Puts an ack into every subscribed connection's slot; false when none subscribed.
    pub fn deliver(&self, ack: &AckOut) -> bool {
        let r = self.routes.lock().expect("routes lock is never poisoned");
        let Some(conns) = r.get(&ack.device) else {
            return false;
        };
        let payload = Bytes::from(match ack.format {
            WireFormat::Binary => binary::encode_ack(&ack.ack).to_vec(),
            WireFormat::Json => json::encode_ack(&ack.ack),
        });
        let t = topic::ack_topic(&self.site, &ack.device);
        for (_, slot) in conns {
            slot.put(&ack.device, t.clone(), payload.clone());
        }
        !conns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mrv_shared::wire::{Ack, AckStatus};

    fn ack(device: &DeviceId, seq: u64) -> AckOut {
        AckOut {
            device: device.clone(),
            ack: Ack {
                acked_seq: seq,
                status: AckStatus::Ok,
            },
            format: WireFormat::Binary,
        }
    }

    #[test]
    fn only_the_newest_ack_per_device_waits_in_a_slot() {
        let routes = AckRoutes::new(SiteId::new("s").expect("valid"));
        let d = DeviceId::new("d").expect("valid");
        let slot = Arc::new(AckSlot::default());
        assert!(!routes.deliver(&ack(&d, 1)));
        routes.route(d.clone(), 7, &slot);
        for seq in 1..=100 {
            assert!(routes.deliver(&ack(&d, seq)));
        }
        let got = slot.take();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "mrv/s/d/ack");
        assert_eq!(binary::decode_ack(&got[0].1).expect("ack").acked_seq, 100);
        routes.unroute(&d, 7);
        assert!(!routes.deliver(&ack(&d, 101)));
    }
}
