//! `--json`: every object `mote` prints matches the documented schema (docs/json-schema.json),
//! output survives byte for byte, and errors before a run come as JSON too.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use base64::Engine;
use mote_host::exit_status;
use mote_tests::{guest_path, mote, mote_bin, text};
use serde_json::Value;

fn schema() -> &'static jsonschema::Validator {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/json-schema.json");
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("the schema is there"))
                .expect("the schema is JSON");
        jsonschema::draft202012::new(&schema).expect("the schema is a valid JSON Schema")
    })
}

/// The one JSON object `out` printed, checked against the schema.
fn document(stdout: &[u8]) -> Value {
    let text = text(stdout);
    let mut lines = text.lines();
    let object: Value = serde_json::from_str(lines.next().expect("a line of JSON"))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(lines.next(), None, "more than one line on stdout: {text}");
    let problems: Vec<String> = schema()
        .iter_errors(&object)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        problems.is_empty(),
        "{object:#}\ndoes not match the schema: {problems:#?}"
    );
    object
}

fn mote_json(args: &[&OsStr], stdin: &[u8]) -> (Option<i32>, Value, String) {
    let mut child = Command::new(mote_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mote starts");
    // mote may stop reading early (an error before the run): a broken pipe is its answer.
    let _ = child.stdin.take().expect("stdin is piped").write_all(stdin);
    let out = child.wait_with_output().expect("mote ends");
    (out.status.code(), document(&out.stdout), text(&out.stderr))
}

fn run_json(guest: &str, extra: &[&str], stdin: &[u8]) -> (Option<i32>, Value, String) {
    let guest = guest_path(guest);
    let mut args: Vec<&OsStr> = vec!["run".as_ref(), guest.as_os_str(), "--json".as_ref()];
    args.extend(extra.iter().map(OsStr::new));
    mote_json(&args, stdin)
}

#[test]
fn binary_output_comes_back_byte_for_byte_and_the_console_goes_to_stderr() {
    let input = b"\xff\x00\xfe binary \x80";
    let (code, report, stderr) = run_json("echo", &["--input", "-"], input);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["version"], 1);
    assert_eq!(report["command"], "run");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["error"], Value::Null);
    assert_eq!(report["exit"]["kind"], "exit");
    assert_eq!(report["exit"]["class"], "guest_exit");
    assert_eq!(report["exit"]["code"], 0);
    assert_eq!(report["output"]["bytes"], input.len());
    let output = base64::engine::general_purpose::STANDARD
        .decode(report["output"]["base64"].as_str().expect("inline output"))
        .expect("base64");
    assert_eq!(output, input);
    let phases = &report["stats"]["phases_ns"];
    assert!(phases["run"].as_u64().is_some_and(|ns| ns > 0), "{phases}");
    assert!(report["stats"]["exits"]["hypercalls"].as_u64() >= Some(2));

    let (code, report, stderr) = run_json("hello", &[], b"");
    assert_eq!(code, Some(0));
    assert!(stderr.contains("Hello from a mote guest!"), "{stderr}");
    assert_eq!(report["output"]["bytes"], 0);
    assert_eq!(report["samples"]["count"], 0);
}

#[test]
fn a_run_says_how_many_timing_samples_its_guest_reported() {
    let (code, report, stderr) = run_json("hashbench", &["-q"], b"");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["samples"]["count"], 2000);

    let (code, report, _) = run_json("samples-hostile", &["--input", "-"], b"name-flood");
    assert_eq!(code, Some(i32::from(exit_status::LIMIT)));
    assert_eq!(report["exit"]["limit"]["name"], "sample_names");
    assert_eq!(report["exit"]["limit"]["value"], 256);
    assert_eq!(report["samples"]["count"], 256);
}

#[test]
fn output_written_to_a_file_is_named_not_inlined() {
    let file = std::env::temp_dir().join(format!("mote-json-output-{}", std::process::id()));
    let (code, report, _) = run_json(
        "echo",
        &["--input", "-", "--output", file.to_str().unwrap()],
        b"abc",
    );
    assert_eq!(code, Some(0));
    assert_eq!(report["output"]["path"], file.display().to_string());
    assert_eq!(report["output"]["bytes"], 3);
    assert_eq!(report["output"].get("base64"), None);
    assert_eq!(std::fs::read(&file).unwrap(), b"abc");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn each_ending_has_its_kind_class_and_fields() {
    let (code, report, _) = run_json("panic", &["-q"], b"");
    assert_eq!(code, Some(i32::from(exit_status::GUEST_FAULT)));
    assert_eq!(report["exit_code"], exit_status::GUEST_FAULT);
    let exit = &report["exit"];
    assert_eq!(exit["kind"], "panic");
    assert_eq!(exit["class"], "guest_fault");
    assert_eq!(exit["panic"]["file"], "examples/src/bin/panic.rs");
    assert_eq!(exit["panic"]["line"], 9);
    assert!(
        exit["panic"]["message"]
            .as_str()
            .unwrap()
            .contains("deliberate panic")
    );

    let (_, report, _) = run_json("fault", &["-q", "--input", "-"], b"page-fault");
    let exit = &report["exit"];
    assert_eq!(exit["kind"], "exception");
    assert_eq!(exit["vector"], 14);
    assert!(
        exit["cr2"].as_str().is_some_and(|a| a.starts_with("0x")),
        "{exit}"
    );
    assert!(exit["error_code"].is_string(), "{exit}");

    // An exception that pushes no error code reports none, in JSON and in words.
    let (_, report, stderr) = run_json("fault", &["-q", "--input", "-"], b"invalid-opcode");
    let exit = &report["exit"];
    assert_eq!(exit["vector"], 6);
    assert_eq!(exit.get("error_code"), None, "{exit}");
    assert!(!stderr.contains("error code"), "{stderr}");

    let (code, report, _) = run_json("spin", &["-q", "--timeout", "200ms"], b"");
    assert_eq!(code, Some(i32::from(exit_status::TIMEOUT)));
    assert_eq!(report["exit"]["kind"], "timeout");
    assert_eq!(report["exit"]["limit_ns"], 200_000_000);

    let (code, report, _) = run_json("hello", &["--hypercall-limit", "1"], b"");
    assert_eq!(code, Some(i32::from(exit_status::LIMIT)));
    assert_eq!(report["exit"]["kind"], "limit");
    assert_eq!(report["exit"]["limit"]["name"], "hypercalls");
    assert_eq!(report["exit"]["limit"]["value"], 1);
}

#[test]
fn errors_before_the_run_are_json_of_the_same_shape() {
    let (code, report, stderr) = mote_json(
        &[
            "run".as_ref(),
            "/nonexistent/guest".as_ref(),
            "--json".as_ref(),
        ],
        b"",
    );
    assert_eq!(code, Some(i32::from(exit_status::USAGE)));
    assert_eq!(report["error"]["kind"], "read_guest");
    assert_eq!(report["error"]["class"], "usage");
    assert_eq!(report["exit"], Value::Null);
    assert_eq!(report["output"], Value::Null);
    assert_eq!(report["samples"], Value::Null);
    // The cause is said once.
    let message = report["error"]["message"].as_str().unwrap();
    assert_eq!(
        message.matches("No such file or directory").count(),
        1,
        "{message}"
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );

    // A value clap refuses.
    let hello = guest_path("hello");
    let (code, report, _) = mote_json(
        &[
            "run".as_ref(),
            hello.as_os_str(),
            "--mem".as_ref(),
            "lots".as_ref(),
            "--json".as_ref(),
        ],
        b"",
    );
    assert_eq!(code, Some(i32::from(exit_status::USAGE)));
    assert_eq!(report["error"]["class"], "usage");
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lots")
    );

    // A guest too big for its memory is the user's to fix, in MiB, with the flag to use.
    let (code, report, _) = run_json(
        "echo",
        &["--input", "-", "--input-limit", "32M"],
        &vec![7; 20 << 20],
    );
    assert_eq!(code, Some(i32::from(exit_status::USAGE)), "{report}");
    assert_eq!(report["error"]["kind"], "memory_too_small");
    let message = report["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("MiB") && message.contains("--mem"),
        "{message}"
    );
}

#[test]
fn inspect_and_snapshot_speak_json_too() {
    let hello = guest_path("hello");
    let out = mote(&["inspect".as_ref(), hello.as_os_str(), "--json".as_ref()]);
    assert_eq!(out.status.code(), Some(0));
    let report = document(&out.stdout);
    assert_eq!(report["command"], "inspect");
    assert_eq!(report["kernel"]["mode"], "user");
    assert!(report["segments"].as_array().is_some_and(|s| !s.is_empty()));

    let out = mote(&[
        "inspect".as_ref(),
        "/nonexistent".as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));
    let report = document(&out.stdout);
    assert_eq!(report["error"]["kind"], "read_guest");
    assert_eq!(report["kernel"], Value::Null);

    let file = std::env::temp_dir().join(format!("mote-json-{}.snap", std::process::id()));
    let echo = guest_path("echo");
    let out = mote(&[
        "snapshot".as_ref(),
        echo.as_os_str(),
        "-o".as_ref(),
        file.as_os_str(),
        "--json".as_ref(),
        "-q".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = document(&out.stdout);
    assert_eq!(report["snapshot"]["path"], file.display().to_string());
    assert_eq!(report["snapshot"]["input_capacity"], 1 << 20);
    let _ = std::fs::remove_file(&file);

    let archive = std::env::temp_dir().join(format!("mote-json-{}.oci.tar", std::process::id()));
    let out = mote(&[
        "package".as_ref(),
        echo.as_os_str(),
        "-o".as_ref(),
        archive.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = document(&out.stdout);
    assert_eq!(report["image"]["name"], "mote.local/echo:latest");
    let _ = std::fs::remove_file(&archive);
    let out = mote(&[
        "package".as_ref(),
        "/nonexistent".as_ref(),
        "-o".as_ref(),
        archive.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));
    assert_eq!(document(&out.stdout)["error"]["kind"], "read_guest");
    assert!(
        !archive.exists(),
        "no image for a guest that cannot be read"
    );
}
