//! The `mote` binary: exit codes, messages and bad input.

use std::ffi::OsStr;
use std::io::Write;

use mote_host::exit_status;
use mote_tests::{guest_path, mote, mote_bin, mote_run, mote_run_with_input, text};

#[test]
fn run_shows_the_console_and_exits_with_the_guests_code() {
    let out = mote_run("hello");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Hello from a mote guest!"));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    let out = mote_run("panic");
    assert_eq!(out.status.code(), Some(i32::from(exit_status::GUEST_FAULT)));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("panicked at examples/src/bin/panic.rs:9: deliberate panic, answer = 42"),
        "{stderr}"
    );
}

#[test]
fn mote_outcomes_have_reserved_codes_and_one_line_reasons() {
    let out = mote_run("triple-fault");
    assert_eq!(out.status.code(), Some(i32::from(exit_status::GUEST_FAULT)));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("triple fault"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let out = mote_run_with_input("fault", b"stack-overflow");
    assert_eq!(out.status.code(), Some(i32::from(exit_status::GUEST_FAULT)));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("overflowed its stack"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let out = mote_run("bad-port");
    assert_eq!(out.status.code(), Some(i32::from(exit_status::GUEST_FAULT)));
    assert!(text(&out.stderr).contains("port 0x1234"));
}

#[test]
fn input_comes_from_a_file_or_stdin_and_output_goes_to_stdout() {
    let out = mote_run_with_input("echo", b"round trip \x00\xff bytes");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"round trip \x00\xff bytes");

    let echo = guest_path("echo");
    let mut child = std::process::Command::new(mote_bin())
        .args([
            "run".as_ref(),
            echo.as_os_str(),
            "--input".as_ref(),
            "-".as_ref(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"from stdin");

    let missing = std::env::temp_dir().join("mote-test-no-such-input");
    let out = mote(&[
        "run".as_ref(),
        echo.as_os_str(),
        "--input".as_ref(),
        missing.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));
    assert!(text(&out.stderr).contains("cannot read input"));
}

#[test]
fn a_stock_kernel_passes_through_debug_exit() {
    let out = mote_run("stock");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Hello from a stock bootloader_api kernel"));
}

#[test]
fn help_documents_the_exit_codes() {
    for args in [&["--help"][..], &["run", "--help"][..]] {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let out = mote(&args);
        assert_eq!(out.status.code(), Some(0));
        let help = text(&out.stdout);
        assert!(help.contains("Exit codes"), "{help}");
        assert!(help.contains("117"), "{help}");
        assert!(help.contains("0x10 means 0"), "{help}");
    }
}

#[test]
fn run_help_explains_irqchip() {
    let out = mote(&["run".as_ref(), "--help".as_ref()]);
    let help = text(&out.stdout);
    assert!(help.contains("--irqchip"), "{help}");
    assert!(
        help.contains("0xFEE00000") && help.contains("PIT"),
        "{help}"
    );
}

#[test]
fn irqchip_runs_timer_kernels_and_refuses_snapshots() {
    let lapic = guest_path("lapic_timer");
    let out = mote(&[
        "run".as_ref(),
        lapic.as_os_str(),
        "--irqchip".as_ref(),
        "--timeout".as_ref(),
        "20s".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("PASS"));
    let snapshot = std::env::temp_dir().join(format!("mote-irqchip-{}.snap", std::process::id()));
    let out = mote(&[
        "snapshot".as_ref(),
        guest_path("echo").as_os_str(),
        "-o".as_ref(),
        snapshot.as_os_str(),
        "--irqchip".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));
    assert!(
        text(&out.stderr).contains("cannot be snapshotted"),
        "{}",
        text(&out.stderr)
    );
    assert!(!snapshot.exists());
}

#[test]
fn bad_command_lines_are_usage_errors() {
    let out = mote(&[OsStr::new("run")]);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));
    let hello = guest_path("hello");
    for mem in ["lots", "1M", "5000000"] {
        let out = mote(&[
            "run".as_ref(),
            hello.as_os_str(),
            "--mem".as_ref(),
            mem.as_ref(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(i32::from(exit_status::USAGE)),
            "--mem {mem}"
        );
        assert!(!text(&out.stderr).is_empty());
    }
}

/// A temporary file holding `bytes`, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("mote-test-{}-{name}", std::process::id()));
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(bytes))
            .expect("temp file");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `mote run FILE` and checks the exit code and that stderr is one line naming the file
/// and the problem.
fn assert_rejected(file: &std::path::Path, code: u8, problem: &str) {
    let out = mote(&["run".as_ref(), file.as_os_str()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(i32::from(code)), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains(problem), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_guest_files_get_one_line_errors_and_distinct_codes() {
    let missing = std::env::temp_dir().join("mote-test-no-such-guest");
    assert_rejected(&missing, exit_status::USAGE, "No such file");

    let script = TempFile::new("script", b"#!/bin/sh\necho not a kernel\n");
    assert_rejected(&script.0, exit_status::BAD_IMAGE, "not an ELF file");

    let hello = std::fs::read(guest_path("hello")).unwrap();
    let mut arm = hello.clone();
    arm[18..20].copy_from_slice(&183u16.to_le_bytes()); // e_machine = EM_AARCH64
    let arm = TempFile::new("arm", &arm);
    assert_rejected(&arm.0, exit_status::BAD_IMAGE, "not x86_64");

    // Rename the config section: the kernel no longer says how to boot it.
    let mut unconfigured = hello.clone();
    let name = b".bootloader-config";
    let at = unconfigured
        .windows(name.len())
        .position(|w| w == name)
        .expect("the section name is in the file");
    unconfigured[at..at + name.len()].copy_from_slice(b".bootloader-xxxxxx");
    let unconfigured = TempFile::new("unconfigured", &unconfigured);
    assert_rejected(
        &unconfigured.0,
        exit_status::BAD_IMAGE,
        ".bootloader-config",
    );

    let truncated = TempFile::new("truncated", &hello[..200]);
    assert_rejected(&truncated.0, exit_status::BAD_IMAGE, "ELF");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn without_dev_kvm_the_error_says_so() {
    if !is_root() {
        eprintln!("skipped: hiding /dev/kvm needs root (a private mount namespace)");
        return;
    }
    // A private mount namespace with an empty /dev: /dev/kvm does not exist there.
    let script = format!(
        "mount -t tmpfs none /dev && exec '{}' run '{}'",
        mote_bin().display(),
        guest_path("hello").display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare runs");
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit_status::NO_KVM)),
        "{stderr}"
    );
    assert!(stderr.contains("/dev/kvm does not exist"), "{stderr}");
}

#[test]
fn without_permission_on_dev_kvm_the_error_says_what_to_do() {
    if !is_root() {
        eprintln!("skipped: switching to an unprivileged user needs root");
        return;
    }
    // The guest must be readable by `nobody`, and /dev/kvm (0600 root, or 0660 kvm) is not.
    let guest = TempFile::new("perm-guest", &std::fs::read(guest_path("hello")).unwrap());
    let mote = TempFile::new("perm-mote", &std::fs::read(mote_bin()).unwrap());
    use std::os::unix::fs::PermissionsExt;
    for file in [&guest.0, &mote.0] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&mote.0)
        .arg("run")
        .arg(&guest.0)
        .output()
        .expect("setpriv runs");
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit_status::NO_KVM)),
        "{stderr}"
    );
    assert!(
        stderr.contains("no permission to open /dev/kvm"),
        "{stderr}"
    );
    assert!(stderr.contains("kvm"), "{stderr}");
}

fn run_args(name: &str, extra: &[&str]) -> std::process::Output {
    let guest = guest_path(name);
    let mut args: Vec<&OsStr> = vec!["run".as_ref(), guest.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    mote(&args)
}

#[test]
fn timeout_stops_a_spinning_guest_with_its_own_code() {
    let out = run_args("spin", &["--timeout", "200ms"]);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::TIMEOUT)));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("deadline of 200ms"), "{stderr}");
    for bad in ["0s", "soon", "-1s"] {
        let out = run_args("hello", &["--timeout", bad]);
        assert_eq!(
            out.status.code(),
            Some(i32::from(exit_status::USAGE)),
            "{bad}"
        );
    }
}

#[test]
fn limits_on_the_command_line_stop_floods() {
    let input = std::env::temp_dir().join(format!("mote-test-flood-{}", std::process::id()));
    std::fs::write(&input, "hypercalls").unwrap();
    let path = input.to_str().unwrap();
    let out = run_args("flood", &["--input", path, "--hypercall-limit", "50"]);
    let _ = std::fs::remove_file(&input);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::LIMIT)));
    assert!(text(&out.stderr).contains("limit of 50 hypercalls"));
}

#[test]
fn output_goes_to_a_file_and_quiet_hides_the_console() {
    let file = std::env::temp_dir().join(format!("mote-test-output-{}", std::process::id()));
    let out = run_args("hello", &["-q", "--output", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert_eq!(std::fs::read(&file).unwrap(), b"");
    let _ = std::fs::remove_file(&file);

    // A path that cannot be written is the user's mistake, found before the guest runs.
    let unwritable = run_args("hello", &["--output", "/nonexistent-dir/out"]);
    assert_eq!(
        unwritable.status.code(),
        Some(i32::from(exit_status::USAGE))
    );
    assert!(text(&unwritable.stderr).contains("cannot write /nonexistent-dir/out"));
    assert!(unwritable.stdout.is_empty(), "the guest did not run");
}

#[test]
fn inspect_shows_the_config_segments_and_mappings() {
    let hello = guest_path("hello");
    let out = mote(&["inspect".as_ref(), hello.as_os_str()]);
    assert_eq!(out.status.code(), Some(0));
    let report = text(&out.stdout);
    for expected in [
        "bootloader_api        0.11",
        "user mode (CPL3",
        "stack                 64 KiB",
        "segments:",
        "r-x",
        "BootInfo",
    ] {
        assert!(report.contains(expected), "{expected}: {report}");
    }
    let stock = guest_path("stock");
    let report = text(&mote(&["inspect".as_ref(), stock.as_os_str()]).stdout);
    assert!(report.contains("kernel mode (CPL0)"), "{report}");
    assert!(!report.contains("BootConfig {"), "a debug dump: {report}");
    let out = mote(&["inspect".as_ref(), "/nonexistent".as_ref()]);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));
}

#[test]
fn a_screenshot_of_the_framebuffer_is_written_as_png() {
    let file = std::env::temp_dir().join(format!("mote-test-shot-{}.png", std::process::id()));
    let path = file.to_str().unwrap();
    let out = run_args(
        "framebuffer",
        &["--framebuffer", "640x480", "--screenshot", path],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&file).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!((frame.width, frame.height), (640, 480));
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    // The kernel paints its top row white.
    assert_eq!(&pixels[..3], &[255, 255, 255]);
    // --screenshot without --framebuffer is a usage error.
    let out = run_args("hello", &["--screenshot", path]);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));
}

#[test]
fn the_exit_code_table_is_the_same_in_help_docs_and_library() {
    use mote_host::Class;
    let help = text(&mote(&["--help".as_ref()]).stdout).to_lowercase();
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/exit-codes.md"
    ))
    .unwrap();
    for class in Class::MOTE {
        let (code, name) = (class.exit_code(), class.name());
        let row = format!("| {code} | `{name}` |");
        assert!(docs.contains(&row), "docs/exit-codes.md lacks {row}");
        let line = format!("  {code}    {}:", name.replace('_', " "));
        assert!(help.contains(&line), "mote --help lacks `{line}`:\n{help}");
    }
}

#[test]
fn pc_gives_firmware_a_framebuffer_and_128_mib() {
    // The PC memory map (more than 4 regions) comes with --acpi, and with --pc.
    for flag in ["--acpi", "--pc"] {
        let out = run_args("pc_memory_map", &[flag]);
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", text(&out.stdout));
    }
    let out = run_args("pc_memory_map", &["--pc"]);
    // 128 MiB of RAM: the last Usable region ends at 0x8000000.
    assert!(
        text(&out.stdout).contains("..0x0008000000 Usable"),
        "{}",
        text(&out.stdout)
    );
    // And a framebuffer, so --screenshot needs nothing more.
    let file = std::env::temp_dir().join(format!("mote-test-pc-{}.png", std::process::id()));
    let out = run_args(
        "framebuffer",
        &["--pc", "--screenshot", file.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(&file);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn an_input_too_big_for_the_memory_is_a_usage_error_that_names_a_size() {
    // 16 MiB of input (the default input limit) in the default 8 MiB: the caller's choice of
    // --mem, refused before any memory is reserved, whatever the memory budget.
    let path = std::env::temp_dir().join(format!("mote-test-big-input-{}", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let out = run_args("echo", &["--input", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit_status::USAGE)),
        "{}",
        text(&out.stderr)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the input (16 MiB) does not fit in 8 MiB of guest memory"),
        "{stderr}"
    );
    assert!(stderr.contains("use --mem 24M"), "{stderr}");
    // The size it names is enough.
    let out = run_args(
        "echo",
        &["--input", path.to_str().unwrap(), "--mem", "24M", "-q"],
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 16 << 20);
}

#[test]
fn a_boot_config_is_read_at_run_time_and_a_bad_one_names_its_field() {
    let dir = std::env::temp_dir();
    let good = dir.join(format!("mote-test-boot-config-{}.json", std::process::id()));
    std::fs::write(
        &good,
        r#"{"frame_buffer":{"minimum_framebuffer_width":800,"minimum_framebuffer_height":600},
        "_test_sentinel":193521294356481}"#,
    )
    .unwrap();
    let out = run_args("boot_config", &["--boot-config", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    std::fs::write(&good, r#"{"serial_logging":"yes"}"#).unwrap();
    let out = run_args("boot_config", &["--boot-config", good.to_str().unwrap()]);
    let _ = std::fs::remove_file(&good);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("field `serial_logging`"), "{stderr}");
    let out = run_args("boot_config", &["--boot-config", "/nonexistent.json"]);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));
}

#[test]
fn a_boot_configs_framebuffer_minimum_is_enough_for_a_screenshot() {
    let dir = std::env::temp_dir();
    let config = dir.join(format!("mote-test-shot-config-{}.json", std::process::id()));
    let shot = dir.join(format!("mote-test-shot-config-{}.png", std::process::id()));
    std::fs::write(
        &config,
        r#"{"frame_buffer":{"minimum_framebuffer_width":800,"minimum_framebuffer_height":600},
        "_test_sentinel":193521294356481}"#,
    )
    .unwrap();
    let out = run_args(
        "boot_config",
        &[
            "--boot-config",
            config.to_str().unwrap(),
            "--screenshot",
            shot.to_str().unwrap(),
        ],
    );
    let written = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_file(&shot);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(written > 0);
}
