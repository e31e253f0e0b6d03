//! Delivery and the buffer: readings are pruned only once every report
//! covering them is delivered. A real sled buffer filled with signed frames,
//! reports built from it, uploaded over TLS to a real receiver.

mod report_support;
mod upload_support;

use mrv_receiver::archive::Archive;

use mrv_gateway::buffer::{CursorName, FrameKey};
use mrv_gateway::upload::task::apply_delivery;
use report_support::TestSite;
use std::time::Duration;
use upload_support::{Pki, Uploader, https_url, init, start_tls_receiver};

const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 86_400);

fn cursor_of(site: &TestSite, seq: u64) -> FrameKey {
    let c = site
        .ctx
        .store
        .meta(seq)
        .expect("meta")
        .cursor
        .expect("report covers frames");
    FrameKey {
        batch: c.batch,
        index: c.index,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_are_pruned_only_after_every_report_covering_them_is_delivered() {
    init();
    let site = TestSite::new();
    for n in 0..3 {
        site.receive_period(n);
    }
    assert_eq!(site.close_through(2).len(), 3);
    let buffer = &site.buffer;
    let store = &site.ctx.store;
    let (c1, c3) = (cursor_of(&site, 1), cursor_of(&site, 3));
    let saved: Vec<_> = (1..=3)
        .map(|seq| {
            (
                store.meta(seq).expect("meta"),
                store.read(seq).expect("read"),
            )
        })
        .collect();
    let after_first = buffer.scan(Some(c1)).count();
    let total = buffer.stats().frames;
    assert!(after_first > 0 && (after_first as u64) < total);

    // Undelivered: nothing may go, however old.
    let far_future = u64::MAX / 2;
    assert_eq!(buffer.prune(far_future).expect("prune").frames, 0);

    // Report 1 delivered: its frames may go, the later reports' stay.
    apply_delivery(store, Some(buffer), 1, far_future, TEN_YEARS).expect("delivery recorded");
    assert_eq!(buffer.cursor(CursorName::Delivered), Some(c1));
    assert!(buffer.stats().frames < total, "report 1's frames pruned");
    assert_eq!(
        buffer.scan(Some(c1)).count(),
        after_first,
        "frames of undelivered reports kept"
    );
    assert_eq!(store.delivered_upto(), 1);
    assert!(
        store.read(1).is_err(),
        "delivered and past its keep time: pruned"
    );
    assert!(
        store.read(2).is_ok() && store.read(3).is_ok(),
        "undelivered kept"
    );

    // The uploader delivers the rest and moves the cursor with it.
    let pki = Pki::new();
    let rx_dir = tempfile::tempdir().expect("tempdir");
    let rx = start_tls_receiver(rx_dir.path(), report_support::keys(&site), &pki, false).await;
    let mut cfg = pki.upload_config(&https_url(&rx), None, false);
    cfg.keep_delivered = TEN_YEARS;
    // Report 1 was recorded as delivered above without the receiver seeing
    // it; the receiver needs the whole chain, so upload from seq 1.
    let fresh = tempfile::tempdir().expect("tempdir");
    let copy = mrv_gateway::report::store::ReportStore::open(fresh.path()).expect("open");
    for (meta, bytes) in &saved {
        copy.put(meta, bytes).expect("copy");
    }
    let mut up = Uploader::start_with_buffer(copy.clone(), cfg, Some(buffer.clone()));
    up.wait(30, |s| s.delivered_upto == 3).await;
    up.stop().await;
    assert_eq!(buffer.cursor(CursorName::Delivered), Some(c3));
    // Everything delivered and older than the buffer's keep time is gone.
    assert_eq!(buffer.scan(None).count(), buffer.stats().frames as usize);
    assert!(
        buffer.stats().frames < after_first as u64,
        "delivered frames pruned: {:?}",
        buffer.stats()
    );
    assert_eq!(
        rx.handle
            .archive()
            .chain_status("gw-th-01")
            .await
            .expect("io")
            .map(|s| s.head_seq),
        Some(3)
    );
    rx.stop().await.expect("stops");
}
