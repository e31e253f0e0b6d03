//! Runtime: opens the buffer, starts the writer, then the MQTT endpoint (or
//! the external broker client) and the other tasks, and stops them.
//!
//! Order matters: devices can only connect once the endpoint listens, and it
//! listens only after the buffer is open and the writer runs, so no publish
//! is ever acknowledged before ingest can store it.
//!
//! This is the only place that knows every task; each task owns its channels
//! and gets a `watch` receiver that turns `true` at shutdown.

use crate::buffer::{Buffer, BufferConfig};
use crate::clock::Clock;
use crate::config::{BrokerMode, GatewayConfig};
use crate::endpoint::{Endpoint, EndpointSettings, EndpointStats};
use crate::ingest::intake::{FrameIntake, FrameIntakeParts};
use crate::ingest::mqtt_task::{MqttIngest, run_mqtt_ingest};
use crate::ingest::quarantine::Quarantine;
use crate::ingest::stats::IngestStats;
use crate::ingest::writer::{WriteRequest, WriterSettings, run_writer};
use mrv_shared::event::{Event, EventKind};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// Path.
        path: std::path::PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The buffer could not be opened.
    #[error("cannot open the buffer: {0}")]
    Buffer(#[from] crate::buffer::StoreError),
    /// The embedded MQTT endpoint could not start.
    #[error(transparent)]
    Endpoint(#[from] crate::endpoint::EndpointError),
    /// Reports cannot be built (signing key missing or unreadable, store).
    #[error("reports: {0}")]
    Report(#[from] crate::report::ReportError),
}

/// Shared state of a running gateway (what diagnostics and tests look at).
#[derive(Clone)]
pub struct GatewayState {
    /// The validated config.
    pub config: Arc<GatewayConfig>,
    /// The durable buffer.
    pub buffer: Buffer,
    /// Ingest counters.
    pub ingest: Arc<IngestStats>,
    /// Embedded MQTT endpoint counters (all zero in external-broker mode).
    pub endpoint: Arc<EndpointStats>,
    /// Where the embedded endpoint listens (after binding; port 0 resolved).
    pub mqtt_addr: Option<std::net::SocketAddr>,
    /// Where its TLS listener listens, if configured.
    pub mqtt_tls_addr: Option<std::net::SocketAddr>,
    /// Rejected payloads.
    pub quarantine: Arc<Mutex<Quarantine>>,
    /// Report time: the clock every stamp and period close uses (the
    /// given clock, read through [`crate::clock_watch::ReportClock`] when
    /// it can jump).
    pub clock: Arc<dyn Clock>,
    /// Hand-off to the durable writer (Modbus poller and others).
    pub writes: mpsc::UnboundedSender<WriteRequest>,
    /// Events to record durably.
    pub events: mpsc::UnboundedSender<Event>,
    /// Every frame the writer stored, as it is stored, one message per group
    /// commit (diagnostics charts and tail).
    pub stored_frames: tokio::sync::broadcast::Sender<crate::ingest::writer::StoredFrames>,
    /// Modbus poll status, when pollers run.
    pub modbus_status: Option<crate::modbus::status::ModbusStatus>,
    /// The signed report store, when reports are built.
    pub reports: Option<crate::report::store::ReportStore>,
    /// The uploader's status as JSON, when an uploader runs.
    pub upload_status: Option<crate::diagnostics::StatusProbe>,
    /// The report task's failures and retries.
    pub report_task: crate::report::retry::ReportTaskStatus,
    /// Free space on the data directory's file system.
    pub disk: crate::free_space::SpaceStatus,
    /// Where the diagnostics page listens (after binding), if enabled.
    pub diagnostics_addr: Option<std::net::SocketAddr>,
    /// The publish intake (its LoRaWAN sessions are shown by diagnostics).
    pub intake: Arc<FrameIntake>,
}

/// A started gateway.
pub struct RunningGateway {
    /// Its state.
    pub state: GatewayState,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Tasks that run until aborted (Modbus pollers).
    pollers: Vec<JoinHandle<()>>,
}

/// Starts every task of the gateway on the current tokio runtime.
pub async fn start(
    config: GatewayConfig,
    clock: Arc<dyn Clock>,
) -> Result<RunningGateway, RuntimeError> {
    // A wall clock that can step is read through the report-time rules
    // (steps held until they persist); every task below stamps with it.
    let report_clock = clock.can_jump().then(|| {
        let confirm_s = config
            .report
            .as_ref()
            .map_or(crate::clock_watch::DEFAULT_STEP_CONFIRM_SECONDS, |r| {
                r.clock_step_confirm_seconds
            });
        Arc::new(crate::clock_watch::ReportClock::new(
            clock.clone(),
            u64::from(confirm_s) * 1000,
        ))
    });
    let clock: Arc<dyn Clock> = match &report_clock {
        Some(rc) => rc.clone(),
        None => clock,
    };
    crate::durable_dir::create_dir_all_durable(&config.data_dir).map_err(|source| {
        RuntimeError::DataDir {
            path: config.data_dir.clone(),
            source,
        }
    })?;
    let buffer_cfg = BufferConfig {
        path: config.buffer.path.clone(),
        max_bytes: config.buffer.max_bytes,
        cache_bytes: config.buffer.cache_bytes,
        keep_delivered: config.buffer.keep_delivered,
    };
    let buffer = tokio::task::spawn_blocking(move || Buffer::open(buffer_cfg))
        .await
        .expect("buffer open task does not panic")?;
    let stats = buffer.stats();
    tracing::info!(
        path = %config.buffer.path.display(),
        frames = stats.frames,
        readings = stats.readings,
        unreported_readings = stats.unreported_readings,
        "buffer open"
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let ingest = Arc::new(IngestStats::default());
    let quarantine = Arc::new(Mutex::new(Quarantine::new(config.mqtt.quarantine_len)));
    let (writes_tx, writes_rx) = mpsc::unbounded_channel();
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    // One message per group commit; a live feed more than this many commits
    // behind skips the oldest (charts lose points, the data path does not),
    // so at most this many commits' frames wait for it in memory.
    let (stored_tx, _) = tokio::sync::broadcast::channel(32);
    let mut tasks = Vec::new();

    let now = {
        let clock = clock.clone();
        move || clock.now_ms()
    };
    let _ = events_tx.send(Event {
        time_ms: clock.now_ms(),
        kind: EventKind::GatewayStarted,
        device: None,
        seqs: None,
        detail: format!(
            "mrv-gateway {} started; buffer holds {} frames, {} unreported readings",
            env!("CARGO_PKG_VERSION"),
            stats.frames,
            stats.unreported_readings
        ),
    });
    for r in buffer.take_repairs() {
        let _ = events_tx.send(Event {
            time_ms: clock.now_ms(),
            kind: EventKind::BufferRepaired,
            device: None,
            seqs: None,
            detail: r.to_string(),
        });
    }
    tasks.push(tokio::spawn(run_event_recorder(buffer.clone(), events_rx)));
    let writer = run_writer(
        buffer.clone(),
        writes_rx,
        acks_tx,
        ingest.clone(),
        stored_tx.clone(),
        WriterSettings {
            window: config.buffer.commit_window,
            max_frames: config.buffer.max_commit_frames,
            give_up_after: config.buffer.give_up_after,
        },
        now.clone(),
    );
    // A failed buffer write does not stop the writer: it reopens the
    // buffer itself (see `ingest::writer`).
    tasks.push(tokio::spawn(writer));
    let config = Arc::new(config);
    let disk = crate::free_space::SpaceStatus::new(
        config.data_dir.clone(),
        crate::free_space::Thresholds {
            warn_below: config.buffer.warn_free_bytes,
            refuse_below: config.buffer.min_free_bytes,
        },
    );
    tasks.push(tokio::spawn(crate::free_space::run_space_watch(
        disk.clone(),
        buffer.clone(),
        events_tx.clone(),
        clock.clone(),
        shutdown_rx.clone(),
    )));
    // Steps of the wall clock become `clock_jump` events (reports take the
    // largest as clock.max_skew_ms).
    if let Some(rc) = report_clock {
        tasks.push(tokio::spawn(crate::clock_watch::run_clock_watch(
            rc,
            events_tx.clone(),
            shutdown_rx.clone(),
        )));
    }
    let intake = Arc::new(FrameIntake::new(FrameIntakeParts {
        site: config.site.id.clone(),
        registry: Arc::new(config.devices.clone()),
        max_payload_bytes: config.mqtt.max_payload_bytes,
        accept_unknown_devices: config.mqtt.accept_unknown_devices,
        writes: writes_tx.clone(),
        stats: ingest.clone(),
        quarantine: quarantine.clone(),
        events: events_tx.clone(),
        now_ms: Arc::new(now.clone()),
        mappings: config.mappings.clone(),
        mapping_dedup_memory_bytes: config.mqtt.mapping_dedup_memory_bytes,
    }));
    let endpoint_stats = Arc::new(EndpointStats::default());
    let mut mqtt_addr = None;
    let mut mqtt_tls_addr = None;
    match config.mqtt.mode {
        BrokerMode::Embedded => {
            let m = &config.mqtt;
            let endpoint = Endpoint::bind(
                EndpointSettings {
                    site: config.site.id.clone(),
                    listen: m.listen,
                    tls: m.tls.clone(),
                    accounts: m
                        .users
                        .iter()
                        .map(|u| {
                            crate::endpoint::auth::Account::new(
                                &u.username,
                                &u.password,
                                u.device
                                    .as_deref()
                                    .and_then(|d| mrv_shared::ids::DeviceId::new(d).ok()),
                            )
                        })
                        .collect(),
                    max_connections: m.max_connections,
                    // Topic, packet id and MQTT 5 properties on top of the payload.
                    max_packet_bytes: m.max_payload_bytes + 1024,
                    receive_maximum: m.receive_maximum,
                    mapped_filters: intake.device_mapping_filters(),
                },
                intake.clone(),
                endpoint_stats.clone(),
            )
            .await?;
            mqtt_addr = endpoint.local_addr();
            mqtt_tls_addr = endpoint.tls_addr();
            tracing::info!(addr = ?mqtt_addr, tls = ?endpoint.tls_addr(), "MQTT endpoint listening");
            tasks.push(tokio::spawn(crate::endpoint::run_ack_delivery(
                acks_rx,
                endpoint.routes(),
                endpoint_stats.clone(),
            )));
            tasks.push(tokio::spawn(endpoint.run(shutdown_rx.clone())));
            IngestStats::add(&ingest.subscribed, 1);
        }
        BrokerMode::External => {
            let mqtt = MqttIngest {
                mqtt: config.mqtt.clone(),
                site: config.site.id.clone(),
                intake: intake.clone(),
                acks: acks_rx,
                stats: ingest.clone(),
                events: events_tx.clone(),
                now_ms: Arc::new(now),
            };
            let rx = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = run_mqtt_ingest(mqtt, rx).await {
                    tracing::error!(error = %e, "MQTT ingest stopped");
                }
            }));
        }
    }
    // Modbus pollers hand frames and events over bounded queues; forward
    // them into the writer's and the event recorder's queues.
    let mut pollers = Vec::new();
    let modbus_status = if config.modbus.devices.is_empty() {
        None
    } else {
        let status = crate::modbus::status::ModbusStatus::new();
        let (frames_tx, mut frames_rx) = mpsc::channel::<WriteRequest>(1024);
        let (modbus_events_tx, mut modbus_events_rx) = mpsc::channel::<Event>(256);
        let writes = writes_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(r) = frames_rx.recv().await {
                if writes.send(r).is_err() {
                    break;
                }
            }
        }));
        let events = events_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(e) = modbus_events_rx.recv().await {
                if events.send(e).is_err() {
                    break;
                }
            }
        }));
        pollers.extend(crate::modbus::spawn_pollers_with_clock(
            &config.modbus,
            config.site.id.clone(),
            frames_tx,
            modbus_events_tx,
            status.clone(),
            clock.clone(),
        ));
        tracing::info!(
            devices = config.modbus.devices.len(),
            "Modbus polling started"
        );
        Some(status)
    };
    let upload_wake = Arc::new(tokio::sync::Notify::new());
    let report_task = crate::report::retry::ReportTaskStatus::default();
    let reports = match &config.report {
        None => {
            tracing::info!("no [report] section: readings are buffered, no reports are built");
            None
        }
        Some(section) => {
            let mut ctx = report_context(&config, section, buffer.clone(), clock.clone())?;
            // The clock daemon's state goes into every report header.
            if section.time_sync != crate::time_sync::TimeSyncMode::Off {
                let status = crate::time_sync::TimeSyncStatus::default();
                tasks.push(tokio::spawn(crate::time_sync::run_time_sync_watch(
                    crate::time_sync::TimeSyncConfig {
                        mode: section.time_sync,
                        chrony_socket: section.chrony_socket.clone(),
                    },
                    status.clone(),
                    shutdown_rx.clone(),
                )));
                ctx.time_sync = Some(status);
            }
            // Before the uploader starts: a crash between storing a report
            // and moving the cursor is repaired first.
            crate::report::repair_reported_cursor(&ctx)?;
            let store = ctx.store.clone();
            // New reports wake the uploader at once (it also polls).
            tasks.push(tokio::spawn(crate::report::run_report_task_with_status(
                ctx,
                shutdown_rx.clone(),
                config.upload.as_ref().map(|_| upload_wake.clone()),
                report_task.clone(),
            )));
            Some(store)
        }
    };
    let upload_status: Option<crate::diagnostics::StatusProbe> = match (&config.upload, &reports) {
        (Some(upload), Some(store)) => {
            let (mut ctx, rx) = crate::upload::task::UploadContext::new(
                upload.clone(),
                store.clone(),
                Some(buffer.clone()),
                clock.clone(),
            );
            ctx.wake = upload_wake;
            ctx.events = Some(events_tx.clone());
            tasks.push(tokio::spawn(crate::upload::task::run_upload_task(
                ctx,
                shutdown_rx.clone(),
            )));
            Some(Arc::new(move || {
                serde_json::to_value(&*rx.borrow()).unwrap_or_default()
            }))
        }
        _ => None,
    };
    let state = GatewayState {
        config,
        buffer,
        ingest,
        endpoint: endpoint_stats,
        mqtt_addr,
        mqtt_tls_addr,
        quarantine,
        clock,
        writes: writes_tx,
        events: events_tx,
        stored_frames: stored_tx,
        modbus_status,
        reports,
        upload_status,
        disk,
        report_task,
        diagnostics_addr: None,
        intake,
    };
    let mut state = state;
    let diagnostics = state.config.diagnostics.clone();
    // A busy diagnostics port must not stop data collection: log and go on.
    match diagnostics.enabled {
        true => match crate::diagnostics::server::bind(&diagnostics).await {
            Ok(listener) => {
                state.diagnostics_addr = listener.local_addr().ok();
                let (st, rx) = (state.clone(), shutdown_rx.clone());
                let r = crate::diagnostics::server::serve_on(listener, st, diagnostics, rx);
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = r.await {
                        tracing::error!(error = %e, "diagnostics page stopped");
                    }
                }));
            }
            Err(e) => tracing::error!(error = %e, "diagnostics page not available"),
        },
        false => tracing::info!("diagnostics page disabled"),
    }
    tasks.push(tokio::spawn(crate::diagnostics::systemd::run_watchdog(
        state.clone(),
        shutdown_rx.clone(),
    )));
    crate::diagnostics::systemd::notify_ready("collecting");
    tracing::info!(site = %state.config.site.id, gateway = %state.config.gateway_id, "gateway ready");
    Ok(RunningGateway {
        state,
        shutdown: shutdown_tx,
        tasks,
        pollers,
    })
}

impl RunningGateway {
    /// Signals every task to stop and waits (bounded) for them.
    pub async fn shutdown(self) {
        crate::diagnostics::systemd::notify_stopping();
        let _ = self.state.events.send(Event {
            time_ms: self.state.clock.now_ms(),
            kind: EventKind::GatewayStopped,
            device: None,
            seqs: None,
            detail: "clean shutdown".into(),
        });
        let _ = self.shutdown.send(true);
        for p in &self.pollers {
            p.abort();
        }
        drop(self.state);
        // Tasks that watch the shutdown signal end on their own; pollers and
        // forwarders are stopped after a short grace period.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        for mut t in self.tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                t.abort();
            }
        }
    }
}

async fn run_event_recorder(buffer: Buffer, mut events: mpsc::UnboundedReceiver<Event>) {
    while let Some(first) = events.recv().await {
        let mut batch = vec![first];
        while let Ok(e) = events.try_recv() {
            batch.push(e);
        }
        let buf = buffer.clone();
        match tokio::task::spawn_blocking(move || buf.record_events(&batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "could not record events"),
            Err(e) => tracing::error!(error = %e, "event recorder failed"),
        }
    }
}

/// The report task's context from the validated config and its `[report]`
/// section: loads the signing key (`key_file`, relative to `data_dir`) and
/// opens the report store under `data_dir`.
pub fn report_context(
    cfg: &GatewayConfig,
    section: &crate::report::config::ReportSection,
    buffer: Buffer,
    clock: Arc<dyn Clock>,
) -> Result<crate::report::ReportContext, crate::report::ReportError> {
    let key_path = if section.key_file.is_absolute() {
        section.key_file.clone()
    } else {
        cfg.data_dir.join(&section.key_file)
    };
    let (kid, signing_key) = crate::keys::load_signing_key(&key_path)?;
    Ok(crate::report::ReportContext {
        identity: crate::report::builder::Identity {
            site: cfg.site.id.clone(),
            project: cfg.site.project.clone(),
            methodology_ref: cfg.site.methodology.clone(),
            gateway: cfg.gateway_id.to_string(),
            kid,
        },
        section: section.clone(),
        calculations: cfg.calculations.clone(),
        devices: crate::report::device_records(&cfg.devices, section),
        signing_key,
        buffer,
        store: crate::report::store::ReportStore::open(&cfg.data_dir)?,
        clock,
        time_sync: None,
    })
}
