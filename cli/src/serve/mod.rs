//! `mote serve`: functions over HTTP. `POST /functions/NAME` runs the function's guest with the
//! request body as its input and answers with its output.
//!
//! The server is tokio and hyper (HTTP/1.1), routed by axum. Guests run on worker threads of
//! mote's, never on the async executor ([`workers`]); warm functions run on pools of VMs
//! restored from a snapshot ([`functions`]). Every way a call can end has its own HTTP status
//! ([`status`]), and every answer but a 200 carries mote's outcome JSON.

mod config;
mod functions;
mod metrics;
mod workers;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mote_host::{CancelToken, Class, Exit, Hypervisor, Outcome};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::{Failure, report};
use functions::Function;
use metrics::Metrics;
use workers::{Done, Job, Workers};

/// `mote serve`'s options.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// A TOML file naming the functions and their limits (see docs/serve.md).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve GUEST at /functions/NAME, with default limits (repeatable; adds to --config).
    #[arg(long = "function", value_name = "NAME=GUEST.elf")]
    functions: Vec<String>,
    /// Where to listen [default: 127.0.0.1:8080, or the config's `listen`]; port 0 picks a
    /// free port (the address is logged).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Threads that run guests [default: two per CPU, or the config's `workers`].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
}

/// What every request handler shares.
struct Server {
    functions: BTreeMap<String, Arc<Function>>,
    workers: Workers,
    metrics: Arc<Metrics>,
    hypervisor: Hypervisor,
    /// Requests in flight; one more than it allows gets 503.
    slots: Arc<tokio::sync::Semaphore>,
    read_timeout: Duration,
    /// The cancel tokens of the calls in flight, for a shutdown that runs out of time.
    in_flight: Mutex<HashMap<u64, CancelToken>>,
    next_call: AtomicU64,
}

pub fn serve(args: &ServeArgs) -> ExitCode {
    start_logging();
    let config = match config::Config::load(
        args.config.as_deref(),
        &args.functions,
        args.listen.as_deref(),
        args.workers,
    ) {
        Ok(config) => config,
        Err(message) => return Failure::usage(message).report("serve", false),
    };
    let hypervisor = match Hypervisor::open() {
        Ok(hypervisor) => hypervisor,
        Err(error) => return Failure::from(error).report("serve", false),
    };
    if let Some(bytes) = config.memory_budget {
        hypervisor.set_memory_budget(bytes);
    }
    let functions = match functions::load_all(&hypervisor, &config) {
        Ok(functions) => functions,
        Err(setup) => {
            let failure = match setup.error {
                Some(error) => Failure {
                    message: setup.message,
                    ..Failure::from(error)
                },
                None => Failure::usage(setup.message),
            };
            return failure.report("serve", false);
        }
    };
    for (name, function) in &functions {
        tracing::info!(
            function = %name,
            guest = %function.settings.guest.display(),
            warm = function.warm(),
            "function ready"
        );
    }
    let workers = match Workers::start(config.workers, config.max_requests, config.queue_timeout) {
        Ok(workers) => workers,
        Err(error) => {
            return Failure::host(
                "workers",
                format!("cannot start the worker threads: {error}"),
            )
            .report("serve", false);
        }
    };
    let server = Arc::new(Server {
        functions,
        workers,
        metrics: Arc::new(Metrics::new()),
        hypervisor,
        slots: Arc::new(tokio::sync::Semaphore::new(config.max_requests)),
        read_timeout: config.read_timeout,
        in_flight: Mutex::new(HashMap::new()),
        next_call: AtomicU64::new(0),
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http_threads)
        .enable_all()
        .thread_name("mote-http")
        .on_thread_start(yield_to_workers)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return Failure::host(
                "runtime",
                format!("cannot start the async runtime: {error}"),
            )
            .report("serve", false);
        }
    };
    let result = runtime.block_on(listen(Arc::clone(&server), &config));
    drop(runtime);
    // Every connection is gone: the server is the last holder of the workers.
    if let Ok(server) = Arc::try_unwrap(server) {
        server.workers.stop();
    }
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(failure) => failure.report("serve", false),
    }
}

/// Puts the calling HTTP thread in Linux's `SCHED_BATCH` class, so that its wake-ups do not
/// preempt a worker in the middle of a run. Every answer a worker hands back wakes an HTTP
/// thread; in the normal class that wake-up preempts whichever worker holds the core, whose
/// vCPU then leaves the guest. A batch thread waits for the running worker's slice instead
/// and then answers every call that finished meanwhile. Measured at 64 connections on
/// 2 cores: about 10 % more calls answered, the median latency no worse
/// (docs/decisions.md). The HTTP threads keep their fair share of the CPU; only their
/// wake-ups lose priority.
fn yield_to_workers() {
    let normal_priority = libc::sched_param { sched_priority: 0 };
    // SAFETY: `normal_priority` is a valid `sched_param` that outlives the call, and pid 0
    // names the calling thread (Linux schedules threads): the call changes this thread's
    // scheduling class and nothing else. `SCHED_BATCH` needs no privilege.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &normal_priority) };
    if result != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "an HTTP thread keeps the normal scheduling class"
        );
    }
}

/// Logs as JSON lines when standard error is not a terminal (a service manager, a container),
/// as text for a person otherwise.
fn start_logging() {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr);
    // `-v` may have set up logging already; that stays.
    let _ = if terminal {
        builder.try_init()
    } else {
        builder.json().with_ansi(false).try_init()
    };
}

fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/functions/{name}", post(call))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(scrape))
        .fallback(|| async { not_found("no such path: functions are at /functions/NAME") })
        .with_state(server)
}

/// Accepts connections until SIGTERM or SIGINT, then lets the requests in flight finish for
/// the shutdown grace, cancels what is left, and returns.
async fn listen(server: Arc<Server>, config: &config::Config) -> Result<(), Failure> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on {}: {e}", config.listen)))?;
    let address: SocketAddr = listener
        .local_addr()
        .map_err(|e| Failure::host("listen", format!("cannot read the listening address: {e}")))?;
    tracing::info!(address = %address, "listening on http://{address}");
    let router = router(Arc::clone(&server));
    let graceful = GracefulShutdown::new();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::host("signals", format!("cannot watch SIGTERM: {e}")))?;
    let mut http = hyper::server::conn::http1::Builder::new();
    // A client that is slow to send its headers is cut off (the body has its own timeout).
    http.timer(TokioTimer::new())
        .header_read_timeout(config.read_timeout);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Out of descriptors, say: wait rather than spin on the error.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let connection = http.serve_connection(
                    TokioIo::new(stream),
                    TowerToHyperService::new(router.clone()),
                );
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(listener);
    let open = server
        .in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len();
    tracing::info!(
        requests = open,
        grace_ms = config.shutdown_grace.as_millis() as u64,
        "shutting down: no new connections; finishing the requests in flight"
    );
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        let tokens: Vec<CancelToken> = server
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        tracing::warn!(
            requests = tokens.len(),
            "the shutdown grace ran out: cancelling the calls still running"
        );
        for token in tokens {
            token.cancel();
        }
        // Cancelled runs end at once; their answers go out if their clients still wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn scrape(State(server): State<Arc<Server>>) -> Response {
    let text = server.metrics.encode(
        &server.functions,
        server.workers.queued(),
        &server.hypervisor,
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// An answer carrying a JSON object.
fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An answer to a call that never reached a guest: mote's error object.
fn refusal(status: StatusCode, kind: &str, class: Class, message: &str) -> Response {
    let document = report::document(
        "run",
        class.exit_code(),
        json!({ "error": report::error(kind, class, message) }),
    );
    let mut response = json_response(status, &document);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn not_found(message: &str) -> Response {
    refusal(StatusCode::NOT_FOUND, "not_found", Class::Usage, message)
}

/// The status of a call that ran: see docs/serve.md for the table.
pub fn status(outcome: &Outcome) -> StatusCode {
    match outcome.exit.guest_code() {
        Some(0) => StatusCode::OK,
        Some(_) => StatusCode::UNPROCESSABLE_ENTITY,
        None => class_status(outcome.exit.class()),
    }
}

/// The status of a call mote could not run to an outcome.
fn error_status(error: &mote_host::Error) -> StatusCode {
    match error {
        mote_host::Error::InputTooLarge { .. } | mote_host::Error::MemoryTooSmall { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        _ => class_status(error.class()),
    }
}

/// The status of a class of ending other than the guest's own exit.
fn class_status(class: Class) -> StatusCode {
    match class {
        Class::GuestFault => StatusCode::BAD_GATEWAY,
        Class::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Class::Limit => StatusCode::INSUFFICIENT_STORAGE,
        Class::Busy => StatusCode::SERVICE_UNAVAILABLE,
        // A cancelled call's client has gone (or the server is stopping): 499, as nginx says
        // of a client that closed its request.
        Class::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Cancels the call if the handler is dropped before it answers: hyper drops it when the
/// client closes its connection.
struct CancelOnDrop {
    token: CancelToken,
    answered: bool,
    server: Arc<Server>,
    id: u64,
    function: String,
    started: Instant,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.server
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        if !self.answered {
            self.token.cancel();
            self.server
                .metrics
                .answered(&self.function, 499, self.started.elapsed().as_secs_f64());
            tracing::info!(function = %self.function, "the client went away: call cancelled");
        }
    }
}

async fn call(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let Some(function) = server.functions.get(&name).cloned() else {
        return not_found(&format!("no function named `{name}`"));
    };
    let response = answer(&server, &function, request, started).await;
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    server.metrics.answered(&name, status, seconds);
    // A log line per call costs a few µs of a call that takes about a hundred: answers are
    // counted in /metrics, and only mote's own failures are logged (every answer with -v).
    let duration_us = (seconds * 1e6) as u64;
    if status == 500 {
        tracing::warn!(function = %name, status, duration_us, "answered");
    } else {
        tracing::debug!(function = %name, status, duration_us, "answered");
    }
    response
}

async fn answer(
    server: &Arc<Server>,
    function: &Arc<Function>,
    request: Request,
    started: Instant,
) -> Response {
    let Ok(slot) = Arc::clone(&server.slots).try_acquire_owned() else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_requests",
            Class::Busy,
            "the server is serving as many requests as it takes; try again",
        );
    };
    server.metrics.in_flight().inc();
    let _counted = scopeguard(|| {
        server.metrics.in_flight().dec();
    });
    let input = match read_body(request, function.settings.input_limit, server.read_timeout).await {
        Ok(input) => input,
        Err(response) => return response,
    };
    let cancel = CancelToken::new();
    let id = server.next_call.fetch_add(1, Ordering::Relaxed);
    server
        .in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, cancel.clone());
    let mut guard = CancelOnDrop {
        token: cancel.clone(),
        answered: false,
        server: Arc::clone(server),
        id,
        function: function.name.clone(),
        started,
    };
    let (reply, done) = oneshot::channel();
    let job = Job {
        function: Arc::clone(function),
        input,
        cancel,
        queued: Instant::now(),
        reply,
        metrics: Arc::clone(&server.metrics),
        // The request's slot goes with its call: a call whose client went away still holds
        // its body until a worker drops it, and counts against `max_requests` till then.
        _slot: slot,
    };
    if server.workers.submit(job).is_err() {
        guard.answered = true;
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            Class::Busy,
            "every worker is busy and the queue is full; try again",
        );
    }
    let done = done.await;
    guard.answered = true;
    match done {
        Ok(Done::Ran(result)) => match *result {
            Ok(outcome) => outcome_response(function, &outcome),
            Err(error) => {
                let message = error.full_message();
                refusal(error_status(&error), error.kind(), error.class(), &message)
            }
        },
        Ok(Done::WaitedTooLong(waited)) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_timeout",
            Class::Busy,
            &format!(
                "the call waited {} ms for a worker, more than the queue allows ({} ms); try again",
                waited.as_millis(),
                server.workers.queue_timeout().as_millis()
            ),
        ),
        // The server is stopping and cancelled the calls still waiting.
        Ok(Done::Abandoned) | Err(_) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "cancelled",
            Class::Cancelled,
            "the server is stopping; the call was cancelled before it ran; try again",
        ),
    }
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// The request body, refused with 413 past `limit` (before reading it, when its length is
/// declared) and with 408 when the client takes longer than `timeout` to send it.
async fn read_body(request: Request, limit: u64, timeout: Duration) -> Result<Vec<u8>, Response> {
    let too_large = || {
        refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "input_too_large",
            Class::Usage,
            &format!(
                "the request body is over this function's input limit of {}",
                mote_host::human_size(limit)
            ),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let body = Limited::new(
        request.into_body(),
        usize::try_from(limit).unwrap_or(usize::MAX),
    );
    match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(error)) => Err(refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            Class::Usage,
            &format!("cannot read the request body: {error}"),
        )),
        Err(_) => Err(refusal(
            StatusCode::REQUEST_TIMEOUT,
            "read_timeout",
            Class::Usage,
            &format!(
                "the request body took longer than {} ms to arrive",
                timeout.as_millis()
            ),
        )),
    }
}

/// The answer to a call that ran: its output on 200, else mote's outcome JSON.
fn outcome_response(function: &Function, outcome: &Outcome) -> Response {
    let status = status(outcome);
    if status == StatusCode::OK {
        let mut response = (status, Body::from(outcome.output.clone())).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return response;
    }
    let mut exit = report::exit(&outcome.exit);
    if let Exit::Cancelled = outcome.exit {
        exit["reason"] = "the client went away or the server is stopping".into();
    }
    let document = report::document(
        "run",
        outcome.exit.process_exit_code(),
        json!({
            "guest": function.name,
            "exit": exit,
            "output": report::output(&outcome.output, None),
            "samples": report::samples(&outcome.samples),
            "stats": report::stats(&outcome.stats),
        }),
    );
    json_response(status, &document)
}
