//! The device-side MQTT link ([`mrv_firmware::mqtt_link::poll_link`])
//! against a scripted MQTT server on 127.0.0.1: when the server closes the
//! connection while a publish waits on a packet-id collision, the client
//! publishes again after the reconnect (rumqttc 0.25.1 alone stays wedged:
//! bytebeamio/rumqtt issue #1056).

use mrv_firmware::mqtt_link::{LinkEvent, poll_link};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Reads one MQTT packet: (fixed-header byte, body).
async fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await?;
    let (mut len, mut mul) = (0usize, 1usize);
    loop {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        len += usize::from(b[0] & 0x7f) * mul;
        if b[0] & 0x80 == 0 {
            break;
        }
        mul *= 128;
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok((first[0], body))
}

/// Accepts a connection, reads its CONNECT, answers CONNACK with
/// session present = 0 (a clean session).
async fn accept_connect(l: &TcpListener) -> TcpStream {
    let (mut s, _) = timeout(Duration::from_secs(10), l.accept())
        .await
        .expect("the client connects")
        .expect("accept");
    let (kind, _) = read_packet(&mut s).await.expect("CONNECT");
    assert_eq!(kind >> 4, 1, "first packet is CONNECT");
    s.write_all(&[0x20, 0x02, 0x00, 0x00])
        .await
        .expect("CONNACK");
    s
}

async fn next_connected(rx: &mut mpsc::UnboundedReceiver<LinkEvent>) {
    loop {
        match timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(LinkEvent::Connected)) => return,
            Ok(Some(_)) => {}
            Ok(None) => panic!("poller ended"),
            Err(_) => panic!("no (re)connect within 10 s"),
        }
    }
}

// One thread: when `publish(..).await` on a rendezvous channel returns, the
// event loop has taken the request and handled it before it yields.
#[tokio::test(flavor = "current_thread")]
async fn a_publish_stashed_on_a_packet_id_collision_does_not_wedge_the_client_after_a_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut opts = MqttOptions::new("dev-x", "127.0.0.1", port);
    // A long keep-alive: rumqttc's own way out (CollisionTimeout after two
    // pings, then a reconnect that wedges again) must not hide the fault.
    opts.set_keep_alive(Duration::from_secs(60))
        .set_clean_session(true)
        .set_inflight(2);
    let (client, el) = AsyncClient::new(opts, 0);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let poller = tokio::spawn(poll_link(el, tx, "ack".into()));

    let mut first = accept_connect(&listener).await;
    next_connected(&mut rx).await;
    // Packet ids 1, 2, 1, ... (window of 2). A takes 1, the SUBSCRIBE 2;
    // B gets 1 again while A is unacked: a collision, B is stashed.
    client
        .publish("up", QoS::AtLeastOnce, false, b"A".to_vec())
        .await
        .expect("A queued");
    client
        .subscribe("ack", QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    client
        .publish("up", QoS::AtLeastOnce, false, b"B".to_vec())
        .await
        .expect("B taken by the event loop");
    let (kind, _) = read_packet(&mut first).await.expect("PUBLISH A");
    assert_eq!(kind >> 4, 3, "A is sent");
    let (kind, _) = read_packet(&mut first).await.expect("SUBSCRIBE");
    assert_eq!(kind >> 4, 8, "the subscription is sent");
    // The server goes away without acking anything (a gateway restart,
    // or the endpoint closing after a failed buffer write).
    drop(first);

    let mut second = accept_connect(&listener).await;
    next_connected(&mut rx).await;
    // The session is gone; a device re-sends its unacked frames now.
    timeout(
        Duration::from_secs(5),
        client.publish("up", QoS::AtLeastOnce, false, b"C".to_vec()),
    )
    .await
    .expect("the event loop takes requests again after the reconnect")
    .expect("C queued");
    let (kind, body) = timeout(Duration::from_secs(5), read_packet(&mut second))
        .await
        .expect("a PUBLISH reaches the server after the reconnect")
        .expect("read");
    assert_eq!(kind >> 4, 3, "a PUBLISH, not only pings");
    assert!(body.ends_with(b"C"), "the new publish is sent: {body:?}");
    poller.abort();
}
