//! The endpoint's TLS listener (rustls, ring): a device connects with TLS,
//! verifying the gateway's certificate against a CA made at run time, logs
//! in with its per-device account, and gets PUBACK and the application ack;
//! the frame is in the buffer when the PUBACK arrives. A plain-text client on
//! the TLS port is refused and counted.

use mrv_e2e::TestSite;
use mrv_gateway::clock::SystemClock;
use mrv_gateway::endpoint::EndpointStats;
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::{Frame, binary};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_publishes_over_tls_and_gets_a_durable_puback() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &issuer).expect("server cert");

    let site = TestSite::new(
        0,
        "\n[[mqtt.users]]\nusername = \"tls-dev\"\npassword = \"pw\"\ndevice = \"tls-dev\"\n\
         \n[[devices]]\nid = \"tls-dev\"\nkind = \"solar_meter\"\n",
    );
    std::fs::write(site.dir.path().join("cert.pem"), cert.pem()).expect("cert");
    std::fs::write(site.dir.path().join("key.pem"), key.serialize_pem()).expect("key");
    let text = std::fs::read_to_string(&site.config_path).expect("config");
    let text = text.replacen(
        "mode = \"embedded\"\n",
        "mode = \"embedded\"\ntls_listen = \"127.0.0.1:0\"\ntls_cert_file = \"cert.pem\"\ntls_key_file = \"key.pem\"\n",
        1,
    );
    std::fs::write(&site.config_path, text).expect("config");
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(SystemClock))
        .await
        .expect("gateway starts with a TLS listener");
    let tls_port = gw.state.mqtt_tls_addr.expect("TLS listener bound").port();

    let mut o = MqttOptions::new("tls-dev", "localhost", tls_port);
    o.set_credentials("tls-dev", "pw")
        .set_keep_alive(Duration::from_secs(10));
    o.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: ca_cert.pem().into_bytes(),
        alpn: None,
        client_auth: None,
    }));
    let (client, mut el) = AsyncClient::new(o, 10);
    let frame = binary::encode_frame(&Frame {
        site: SiteId::new("demo-site").expect("valid"),
        device: DeviceId::new("tls-dev").expect("valid"),
        seq: 1,
        boot: 1,
        firmware: "tls".into(),
        base_time_ms: Some(1_764_115_200_000),
        channels: vec![Channel {
            id: ChannelId::new("energy").expect("valid"),
            quantity: Quantity::Energy,
            kind: ValueKind::Counter,
        }],
        samples: vec![Sample {
            channel: 0,
            offset_ms: 0,
            value: 7,
            quality: Quality::GOOD,
        }],
        signature: None,
    });
    let (mut puback, mut app_ack) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(puback && app_ack) {
        assert!(
            Instant::now() < deadline,
            "no PUBACK/ack over TLS (puback {puback}, ack {app_ack})"
        );
        match tokio::time::timeout(Duration::from_secs(20), el.poll())
            .await
            .expect("event")
        {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                client
                    .subscribe("mrv/demo-site/tls-dev/ack", QoS::AtLeastOnce)
                    .await
                    .expect("sub");
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                client
                    .publish(
                        "mrv/demo-site/tls-dev/up",
                        QoS::AtLeastOnce,
                        false,
                        frame.clone(),
                    )
                    .await
                    .expect("pub");
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                let stored = mrv_e2e::stored_seqs(&gw.state.buffer);
                assert!(
                    stored
                        .get(&DeviceId::new("tls-dev").expect("valid"))
                        .is_some_and(|m| m.contains_key(&1)),
                    "PUBACK over TLS before the frame was stored"
                );
                puback = true;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                app_ack |= binary::decode_ack(&p.payload).is_ok_and(|a| a.acked_seq == 1);
            }
            Ok(_) => {}
            Err(e) => panic!("TLS connection failed: {e}"),
        }
    }
    // Plain MQTT on the TLS port: the handshake fails, the connection is closed and counted.
    let before = EndpointStats::get(&gw.state.endpoint.malformed);
    let port = tls_port;
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let _ = s.write_all(&[0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 10, 0, 0]);
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
    })
    .await
    .expect("plain client ran");
    let deadline = Instant::now() + Duration::from_secs(10);
    while EndpointStats::get(&gw.state.endpoint.malformed) == before {
        assert!(
            Instant::now() < deadline,
            "a failed TLS handshake is not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.shutdown().await;
}
