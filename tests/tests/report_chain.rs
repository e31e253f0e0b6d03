//! Reports from a real sled buffer: hourly-style periods close into a
//! verifiable chain, counters carry across reports, late frames are kept,
//! and a crash between storing a report and moving the buffer cursor never
//! yields a second report with the same seq.

mod report_support;

use mrv_gateway::buffer::CursorName;
use mrv_gateway::cli::verify::verify_files;
use mrv_gateway::clock::ManualClock;
use mrv_gateway::report::build_due_reports;
use mrv_gateway::report::run_report_task;
use report_support::*;

#[test]
fn three_periods_make_a_valid_chain_with_counters_carried_across() {
    let site = TestSite::new();
    for n in 0..3 {
        site.receive_period(n);
    }
    // Nothing is due before the first period end plus grace.
    assert!(
        build_due_reports(&site.ctx, period(0).end_ms + 29_999)
            .expect("ok")
            .is_empty()
    );
    let infos = site.close_through(2);
    assert_eq!(
        infos.iter().map(|i| i.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // 2 meters x 60 samples, every period.
    assert!(infos.iter().all(|i| i.readings == 120));
    let files = site.report_files();
    let (verdicts, _) = verify_files(&files, &keys(&site), &trust(), false, None);
    assert!(verdicts.iter().all(|v| v.problem.is_none()), "{verdicts:?}");
    // Report 1 has 59 credited steps per meter; later ones 60 (the step from
    // the previous report's last value counts).
    let e = |i: usize| {
        payload(&std::fs::read(&files[i]).expect("read"))["calculations"][0]["inputs"]["re_energy_wh"]
            .as_str()
            .expect("string")
            .to_string()
    };
    assert_eq!(e(0), (2 * 59 * 25).to_string());
    assert_eq!(e(1), (2 * 60 * 25).to_string());
    // The buffer cursor covers everything; the store lists all for upload.
    assert_eq!(site.buffer.stats().unreported_frames, 0);
    assert_eq!(site.ctx.store.undelivered(), vec![1, 2, 3]);
    // Calling again builds nothing new.
    assert!(site.close_through(2).is_empty());
}

#[test]
fn an_empty_period_still_gets_a_report_and_late_frames_go_into_the_next() {
    let site = TestSite::new();
    site.receive_period(0);
    let first = site.close_through(0);
    assert_eq!(first.len(), 1);
    // Period 1: no data at all. Period 2: period 1's frames arrive late,
    // received during period 2, after the grace of period 1.
    let late: Vec<_> = mrv_gateway::report::synthetic::pv_frames(&SITE, &site_id(), period(1))
        .into_iter()
        .map(|f| mrv_gateway::buffer::Incoming {
            frame: f.frame,
            received_ms: period(2).start_ms + 60_000,
        })
        .collect();
    site.buffer.append(late).expect("append");
    let infos = site.close_through(2);
    assert_eq!(
        infos
            .iter()
            .map(|i| (i.seq, i.readings))
            .collect::<Vec<_>>(),
        vec![(2, 0), (3, 120)]
    );
    let files = site.report_files();
    let p2 = payload(&std::fs::read(&files[1]).expect("read"));
    assert_eq!(p2["series"].as_array().expect("array").len(), 0);
    let kinds = |p: &serde_json::Value| -> Vec<String> {
        p["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["kind"].as_str().expect("kind").to_string())
            .collect()
    };
    assert_eq!(kinds(&p2), ["device_offline", "device_offline"]);
    let p3 = payload(&std::fs::read(&files[2]).expect("read"));
    assert_eq!(kinds(&p3), ["device_online", "device_online"]);
    assert!(
        p3["readings"]["frames"]
            .as_array()
            .expect("frames")
            .iter()
            .all(|f| f["late"] == true)
    );
    let (verdicts, _) = verify_files(&files, &keys(&site), &trust(), false, None);
    assert!(verdicts.iter().all(|v| v.problem.is_none()), "{verdicts:?}");
}

#[test]
fn a_crash_after_storing_before_moving_the_cursor_reuses_the_stored_report() {
    let site = TestSite::new();
    site.receive_period(0);
    site.receive_period(1);
    // Snapshot the buffer as it is before any report: this is the disk state
    // a crash right after storing report 1 (cursor not yet moved) leaves.
    let TestSite {
        dir, buffer, ctx, ..
    } = site;
    drop(ctx);
    drop(buffer);
    let snapshot = dir.path().join("buffer-before");
    copy_dir(&dir.path().join("buffer"), &snapshot);
    let clock = ManualClock::new(T0);
    let ctx = context(dir.path(), open_buffer(dir.path()), clock.clone());
    let built = build_due_reports(&ctx, period(0).end_ms + 30_000).expect("build");
    assert_eq!(built.len(), 1);
    let report1 = ctx.store.read(1).expect("stored");
    drop(ctx);
    // "Crash": the buffer goes back to the snapshot (cursor not moved).
    std::fs::remove_dir_all(dir.path().join("buffer")).expect("rm");
    std::fs::rename(&snapshot, dir.path().join("buffer")).expect("mv");
    let buffer = open_buffer(dir.path());
    assert_eq!(buffer.cursor(CursorName::Reported), None);
    let ctx = context(dir.path(), buffer.clone(), clock);
    let built = build_due_reports(&ctx, period(1).end_ms + 30_000).expect("build");
    // Report 1 is reused (not rebuilt), the cursor repaired, report 2 holds
    // only period 1's frames.
    assert_eq!(
        built
            .iter()
            .map(|i| (i.seq, i.readings))
            .collect::<Vec<_>>(),
        vec![(2, 120)]
    );
    assert_eq!(ctx.store.read(1).expect("still there"), report1);
    assert!(buffer.cursor(CursorName::Reported).is_some());
    let files = vec![ctx.store.path(1), ctx.store.path(2)];
    let pk = dir.path().join("keys/gw-th-01.pub.jwk");
    let keys = mrv_gateway::keys::load_public_keys(&[pk]).expect("keys");
    let (verdicts, _) = verify_files(&files, &keys, &trust(), false, None);
    assert!(verdicts.iter().all(|v| v.problem.is_none()), "{verdicts:?}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("readdir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).expect("copy");
        }
    }
}

#[tokio::test]
async fn the_report_task_closes_due_periods_before_honouring_shutdown() {
    let site = TestSite::new();
    site.receive_period(0);
    site.receive_period(1);
    site.clock.set(period(1).end_ms + 30_000);
    let (tx, rx) = tokio::sync::watch::channel(true);
    let store = site.ctx.store.clone();
    tokio::spawn(run_report_task(site.ctx.clone(), rx))
        .await
        .expect("task ends");
    drop(tx);
    assert_eq!(store.head().map(|h| h.seq), Some(2));
}
