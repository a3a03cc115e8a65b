//! `mote run` as the cargo runner of a kernel crate (docs/cargo-runner.md).

use mote_tests::{mote_bin, text};

/// `cargo run` in the guest workspace, with mote as the runner of x86_64-unknown-none binaries
/// (set through cargo's environment form of `target.x86_64-unknown-none.runner`).
fn cargo_run(bin: &str, args: &[&str]) -> std::process::Output {
    let guest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest");
    let runner = format!("{} run", mote_bin().display());
    std::process::Command::new(env!("CARGO"))
        .current_dir(guest)
        .env("CARGO_TARGET_X86_64_UNKNOWN_NONE_RUNNER", runner)
        .args([
            "run",
            "--quiet",
            "--release",
            "--target",
            "x86_64-unknown-none",
        ])
        .args(["--bin", bin, "--"])
        .args(args)
        .output()
        .expect("cargo runs")
}

#[test]
fn cargo_run_boots_a_kernel_through_mote() {
    let out = cargo_run("stock", &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("Hello from a stock bootloader_api kernel"),
        "{stdout}"
    );
}

#[test]
fn cargo_run_passes_arguments_and_the_exit_status_through() {
    let out = cargo_run("fault", &["--input", "/dev/null", "--mem", "16M"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(mote_host::exit_status::GUEST_FAULT)),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("page fault"));
}
