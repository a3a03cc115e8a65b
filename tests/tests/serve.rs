//! `mote serve` under a real HTTP client: every status it maps, backpressure, a client that
//! goes away, graceful shutdown, and configurations it refuses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mote_tests::{guest_path, mote_bin, within};
use serde_json::Value;

/// A `mote serve` process, stopped when dropped.
struct Server {
    child: Child,
    address: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `mote serve` with the configuration `toml` (guests named by their built paths)
    /// and waits until it listens.
    fn start(toml: &str) -> Self {
        Self::start_with(toml, |_| {})
    }

    /// [`Server::start`], with `prepare` adjusting the command first.
    fn start_with(toml: &str, prepare: impl FnOnce(&mut Command)) -> Self {
        let path = std::env::temp_dir().join(format!(
            "mote-serve-{}-{}.toml",
            std::process::id(),
            toml.len()
        ));
        std::fs::write(&path, toml).unwrap();
        let mut command = Command::new(mote_bin());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        prepare(&mut command);
        let mut child = command.spawn().expect("mote serve starts");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let (address, stderr) = within(Duration::from_secs(30), move || {
            let mut line = String::new();
            loop {
                line.clear();
                if stderr.read_line(&mut line).unwrap() == 0 {
                    panic!("mote serve ended before it listened");
                }
                if let Some(at) = line.find("listening on http://") {
                    let rest = &line[at + "listening on http://".len()..];
                    let end = rest.find(['"', ' ', '\n']).unwrap_or(rest.len());
                    break (rest[..end].to_owned(), stderr);
                }
            }
        });
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut stderr = stderr;
            let mut line = String::new();
            while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let _ = std::fs::remove_file(&path);
        Self {
            child,
            address,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn post(&self, function: &str, body: &[u8]) -> (u16, Vec<u8>, Option<String>) {
        let mut response = agent()
            .post(self.url(&format!("/functions/{function}")))
            .send(body)
            .expect("the server answers");
        let retry = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().unwrap().to_owned());
        let body = response.body_mut().read_to_vec().unwrap();
        (response.status().as_u16(), body, retry)
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut response = agent().get(self.url(path)).call().unwrap();
        let body = response.body_mut().read_to_string().unwrap();
        (response.status().as_u16(), body)
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill sends a signal to our own child, not yet reaped.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) },
            0
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that returns every status as a response, not an error.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn guest(name: &str) -> String {
    guest_path(name).display().to_string()
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[test]
fn every_ending_has_its_status_and_outcome_json() {
    let server = Server::start(&format!(
        r#"
        workers = 4
        read_timeout = "300ms"
        [functions.echo]
        guest = "{echo}"
        input_limit = "1K"
        [functions.panic]
        guest = "{panic}"
        [functions.spin]
        guest = "{spin}"
        timeout = "300ms"
        [functions.hostcall]
        guest = "{hostcall}"
        [functions.chatty]
        guest = "{hello}"
        hypercall_limit = 1
        [functions.stock]
        guest = "{stock}"
        "#,
        echo = guest("echo"),
        panic = guest("panic"),
        spin = guest("spin"),
        hostcall = guest("hostcall"),
        hello = guest("hello"),
        stock = guest("stock"),
    ));

    let (status, body, _) = server.post("echo", b"\x00binary\xff");
    assert_eq!((status, body.as_slice()), (200, &b"\x00binary\xff"[..]));

    let (status, body, _) = server.post("panic", b"");
    assert_eq!(status, 502);
    let report = json(&body);
    assert_eq!(report["exit"]["kind"], "panic");
    assert_eq!(report["exit"]["class"], "guest_fault");

    let (status, body, _) = server.post("hostcall", b"no host function here");
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["exit"]["code"], 2);

    let (status, body, _) = server.post("spin", b"");
    assert_eq!(status, 504);
    assert_eq!(json(&body)["exit"]["limit_ns"], 300_000_000);

    let (status, body, _) = server.post("chatty", b"");
    assert_eq!(status, 507);
    assert_eq!(json(&body)["exit"]["limit"]["name"], "hypercalls");

    // A guest that cannot be snapshotted is served cold.
    let (status, _, _) = server.post("stock", b"");
    assert_eq!(status, 200);

    // Over the input limit: refused before anything runs, with the length declared or not.
    let (status, body, _) = server.post("echo", &[b'x'; 1025]);
    assert_eq!(status, 413);
    assert_eq!(json(&body)["error"]["kind"], "input_too_large");
    let mut stream = TcpStream::connect(&server.address).unwrap();
    let chunk = vec![b'y'; 2000];
    write!(
        stream,
        "POST /functions/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        chunk.len()
    )
    .unwrap();
    stream.write_all(&chunk).unwrap();
    stream.write_all(b"\r\n0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A client that stops sending its body.
    let mut stream = TcpStream::connect(&server.address).unwrap();
    stream
        .write_all(
            b"POST /functions/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b",
        )
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 408");

    assert_eq!(server.post("nothing", b"").0, 404);
    let (status, _) = server.get("/functions/echo");
    assert_eq!(status, 405);
    assert_eq!(server.get("/healthz"), (200, "ok\n".into()));
    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    for line in [
        r#"mote_http_requests_total{function="echo",status="200"} 1"#,
        r#"mote_http_requests_total{function="spin",status="504"} 1"#,
        r#"mote_runs_total{function="panic",class="guest_fault",kind="panic"} 1"#,
        r#"mote_pool_vms{function="echo",state="idle"}"#,
        "mote_call_duration_seconds_bucket",
        "mote_memory_budget_bytes",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
}

/// mote's own failures answer 500: here the host cannot reserve a guest's memory, since the
/// server's address space is limited below it.
#[test]
fn a_host_failure_answers_500_with_its_error_json() {
    const ADDRESS_SPACE: libc::rlim_t = 1 << 30;
    let server = Server::start_with(
        &format!(
            "[functions.big]\nguest = \"{}\"\nwarm = false\nmemory = \"2G\"\n",
            guest("hello")
        ),
        |command| {
            // SAFETY: between fork and exec the closure only calls setrlimit, which is
            // async-signal-safe, on a stack value; it allocates nothing and takes no lock.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(command, || {
                    let limit = libc::rlimit {
                        rlim_cur: ADDRESS_SPACE,
                        rlim_max: ADDRESS_SPACE,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        },
    );
    let (status, body, retry) = server.post("big", b"");
    assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));
    assert_eq!(retry, None);
    let report = json(&body);
    assert_eq!(report["error"]["class"], "host_failure");
    assert_eq!(report["error"]["kind"], "memory");
    // The server logs its own failures, and carries on. The line is written before the answer
    // goes out, but the thread that collects the server's log may read it a little later.
    let logged = || server.log.lock().unwrap().contains("\"status\":500");
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !logged() && std::time::Instant::now() < give_up {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(logged(), "{}", server.log.lock().unwrap());
    assert_eq!(server.get("/healthz"), (200, "ok\n".into()));
}

#[test]
fn a_client_that_goes_away_cancels_its_run() {
    let server = Server::start(&format!(
        "[functions.spin]\nguest = \"{}\"\ntimeout = \"20s\"\n",
        guest("spin")
    ));
    let mut stream = TcpStream::connect(&server.address).unwrap();
    stream
        .write_all(b"POST /functions/spin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    // The run ends as cancelled, long before its 20 s deadline.
    let cancelled = r#"mote_runs_total{function="spin",class="cancelled",kind="cancelled"} 1"#;
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = server.get("/metrics");
        if metrics.contains(cancelled) {
            break;
        }
        assert!(Instant::now() < give_up, "no cancelled run in:\n{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_full_server_answers_503_with_retry_after() {
    let server = Server::start(&format!(
        "workers = 1\nmax_requests = 2\nqueue_timeout = \"100ms\"\n\
         [functions.spin]\nguest = \"{}\"\ntimeout = \"1s\"\n",
        guest("spin")
    ));
    let server = Arc::new(server);
    let first = {
        let server = Arc::clone(&server);
        std::thread::spawn(move || server.post("spin", b""))
    };
    std::thread::sleep(Duration::from_millis(300));
    // The second waits for the one worker longer than the queue allows; the third finds
    // every request slot taken.
    let second = {
        let server = Arc::clone(&server);
        std::thread::spawn(move || server.post("spin", b""))
    };
    std::thread::sleep(Duration::from_millis(100));
    let (status, body, retry) = server.post("spin", b"");
    assert_eq!(status, 503);
    assert_eq!(json(&body)["error"]["kind"], "too_many_requests");
    assert_eq!(retry.as_deref(), Some("1"));
    let (status, body, retry) = second.join().unwrap();
    assert_eq!(status, 503);
    assert_eq!(json(&body)["error"]["kind"], "queue_timeout");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(first.join().unwrap().0, 504);
}

#[test]
fn sigterm_finishes_the_calls_in_flight_then_exits_0() {
    let mut server = Server::start(&format!(
        "[functions.spin]\nguest = \"{}\"\ntimeout = \"700ms\"\n",
        guest("spin")
    ));
    let url = server.url("/functions/spin");
    let in_flight = std::thread::spawn(move || {
        let mut response = agent().post(&url).send(&b""[..]).unwrap();
        let _ = response.body_mut().read_to_vec();
        response.status().as_u16()
    });
    std::thread::sleep(Duration::from_millis(200));
    server.signal(libc::SIGTERM);
    assert_eq!(
        in_flight.join().unwrap(),
        504,
        "the call in flight got its answer"
    );
    let status = within(Duration::from_secs(20), {
        let mut child = std::mem::replace(&mut server.child, Command::new("true").spawn().unwrap());
        move || child.wait().unwrap()
    });
    assert_eq!(status.code(), Some(0), "{}", server.log.lock().unwrap());
    assert!(server.log.lock().unwrap().contains("shutting down"));
}

#[test]
fn a_config_naming_a_missing_or_bad_guest_is_refused_at_start() {
    let not_elf = std::env::temp_dir().join(format!("mote-serve-not-elf-{}", std::process::id()));
    std::fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
    for (flag, code, says) in [
        (
            "lookup=/nonexistent/guest".to_owned(),
            112,
            "function lookup: cannot read guest",
        ),
        (
            format!("broken={}", not_elf.display()),
            113,
            "function broken",
        ),
        ("no-equals-sign".to_owned(), 112, "NAME=GUEST"),
    ] {
        let out = Command::new(mote_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--function", &flag])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{flag}: {stderr}");
        assert!(stderr.contains(says), "{flag}: {stderr}");
    }
    let _ = std::fs::remove_file(&not_elf);
}
