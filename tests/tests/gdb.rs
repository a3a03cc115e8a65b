//! `mote run --gdb`: the real `gdb`, in batch mode, against a guest under real KVM.
//!
//! The test guest (`gdb-target`) is a kernel-mode guest: see docs/debugging.md for why. `gdb`
//! is installed (Debian's package) if missing; set `MOTE_SKIP_GDB=1` to skip these tests where
//! it cannot be.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mote_tests::{guest_path, mote_bin, text};

/// Whether gdb is here (installed now if it was not); `false` only when told to skip.
fn have_gdb() -> bool {
    if std::env::var_os("MOTE_SKIP_GDB").is_some() {
        eprintln!("SKIPPED: MOTE_SKIP_GDB is set; `mote run --gdb` was not tested");
        return false;
    }
    let present = || {
        Command::new("gdb")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if present() {
        return true;
    }
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-q", "gdb"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    assert!(
        installed.as_ref().is_ok_and(|out| out.status.success()) && present(),
        "gdb is missing and `apt-get install gdb` did not install it ({}); install gdb, or set \
         MOTE_SKIP_GDB=1 to skip this test",
        installed.map_or_else(|e| e.to_string(), |out| text(&out.stderr))
    );
    true
}

/// `mote run GUEST --gdb 0 ARGS`, once it says which port it listens on; standard error's lines
/// after that go to the receiver.
fn start_mote(guest: &Path, args: &[&str]) -> (Child, u16, mpsc::Receiver<String>) {
    let mut child = Command::new(mote_bin())
        .arg("run")
        .arg(guest)
        .args(["--gdb", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mote");
    let stderr = child.stderr.take().expect("mote's stderr");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("mote says where it waits for gdb");
    let port = first
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {first:?}"));
    (child, port, lines)
}

/// `gdb -batch -nx GUEST -ex 'target remote :PORT' -ex COMMAND...`, started.
fn gdb(guest: &Path, port: u16, commands: &[&str]) -> Child {
    let mut command = Command::new("gdb");
    command.args(["-batch", "-nx"]).arg(guest);
    command.args(["-ex", &format!("target remote :{port}")]);
    for line in commands {
        command.args(["-ex", line]);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gdb")
}

/// Waits for `child` for at most a minute.
fn finish(child: Child, what: &str) -> Output {
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    done.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} did not end within a minute"))
        .expect(what)
}

/// The first `0x...` number on the line that starts with `register` (`info registers`).
fn register(output: &str, register: &str, nth: usize) -> u64 {
    let line = output
        .lines()
        .filter(|line| line.split_whitespace().next() == Some(register))
        .nth(nth)
        .unwrap_or_else(|| panic!("no line {nth} for {register} in:\n{output}"));
    let hex = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.strip_prefix("0x"))
        .unwrap_or_else(|| panic!("no value on {line:?}"));
    u64::from_str_radix(hex, 16).expect("hex")
}

/// Where `mote inspect` says the kernel is moved to, and the ELF symbol's link address.
fn relocated_symbol(guest: &Path, symbol: &str) -> u64 {
    let out = Command::new(mote_bin())
        .args(["inspect", "--json"])
        .arg(guest)
        .output()
        .expect("mote inspect");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect's JSON");
    let offset = json["kernel"]["load_offset"]
        .as_str()
        .and_then(|hex| u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok())
        .expect("load_offset");
    let nm = Command::new("gdb")
        .args(["-batch", "-nx"])
        .arg(guest)
        .args(["-ex", &format!("info address {symbol}")])
        .output()
        .expect("gdb, without a target");
    // "Symbol "NAME" is a function at address 0x13c0." (or "is at 0x13c0 in a file ...")
    let said = text(&nm.stdout);
    let link = said
        .split(" 0x")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_hexdigit()).next())
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or_else(|| panic!("no address in {said:?}"));
    link + offset
}

#[test]
fn gdb_breaks_reads_steps_and_sees_the_guest_exit() {
    if !have_gdb() {
        return;
    }
    let guest = guest_path("gdb-target");
    let function = relocated_symbol(&guest, "gdb_target_function");
    let (mote, port, _lines) = start_mote(&guest, &[]);
    let gdb = gdb(
        &guest,
        port,
        &[
            "break gdb_target_function",
            "continue",
            "info registers rip",
            "print gdb_target::GDB_MAGIC",
            "print/x gdb_target::GDB_MAGIC",
            "stepi",
            "info registers rip",
            "next",
            "print gdb_target::GDB_CALLS.v.value",
            "delete",
            "continue",
        ],
    );
    let gdb = finish(gdb, "gdb");
    let said = format!("{}{}", text(&gdb.stdout), text(&gdb.stderr));
    let mote = finish(mote, "mote");
    assert!(said.contains("Breakpoint 1, "), "{said}");
    let at_break = register(&said, "rip", 0);
    assert_eq!(at_break, function, "{said}");
    assert!(
        said.contains("$1 = 1702129517") && said.contains("$2 = 0x65746f6d"),
        "{said}"
    );
    let stepped = register(&said, "rip", 1);
    assert!(stepped > at_break && stepped < at_break + 16, "{said}");
    assert!(said.contains("$3 = 1"), "{said}");
    assert!(said.contains("exited with code 07"), "{said}");
    assert_eq!(mote.status.code(), Some(7), "{}", text(&mote.stderr));
}

#[test]
fn gdbs_ctrl_c_stops_a_running_guest_and_kill_ends_the_run() {
    if !have_gdb() {
        return;
    }
    let guest = guest_path("gdb-target");
    let input = std::env::temp_dir().join(format!("mote-gdb-spin-{}", std::process::id()));
    std::fs::write(&input, b"spin").expect("write the input");
    let (mote, port, _lines) = start_mote(&guest, &["--input", input.to_str().expect("path")]);
    let gdb = gdb(
        &guest,
        port,
        &[
            "continue",
            "info registers rip",
            "print gdb_target::GDB_CALLS.v.value",
            "kill",
        ],
    );
    // Ctrl-C, as a terminal sends it to gdb, once the guest runs.
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill(2) on a child of this process that has not been waited for.
    unsafe { libc::kill(gdb.id() as libc::pid_t, libc::SIGINT) };
    let gdb = finish(gdb, "gdb");
    let said = format!("{}{}", text(&gdb.stdout), text(&gdb.stderr));
    let mote = finish(mote, "mote");
    let _ = std::fs::remove_file(&input);
    assert!(said.contains("Program received signal SIGINT"), "{said}");
    // Stopped in the guest's code (its loop, or the function it calls), which had run.
    let rip = register(&said, "rip", 0);
    let image = relocated_symbol(&guest, "gdb_target_function") & !0xFFFF;
    assert!((image..image + 0x1_0000).contains(&rip), "{said}");
    let calls: u64 = said
        .split("$1 = ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count in {said}"));
    assert!(calls > 0, "{said}");
    // gdb's `kill` ends the run as a cancel.
    assert_eq!(
        mote.status.code(),
        Some(i32::from(mote_host::exit_status::CANCELLED)),
        "{}",
        text(&mote.stderr)
    );
}

#[test]
fn a_fifth_breakpoint_is_refused_time_held_is_not_charged_and_a_detached_guest_runs_on() {
    if !have_gdb() {
        return;
    }
    let guest = guest_path("gdb-target");
    let function = relocated_symbol(&guest, "gdb_target_function");
    // A deadline shorter than the time gdb holds the guest.
    let (mote, port, _lines) = start_mote(&guest, &["--timeout", "1s"]);
    let more: Vec<String> = (1..=4)
        .map(|i| format!("break *{:#x}", function + i))
        .collect();
    let mut commands = vec!["break gdb_target_function", "continue", "shell sleep 2"];
    commands.extend(more.iter().map(String::as_str));
    commands.extend(["continue", "delete", "detach"]);
    let gdb = finish(gdb(&guest, port, &commands), "gdb");
    let said = format!("{}{}", text(&gdb.stdout), text(&gdb.stderr));
    let mote = finish(mote, "mote");
    assert!(said.contains("Breakpoint 1, "), "{said}");
    assert!(said.contains("Cannot insert breakpoint"), "{said}");
    assert!(said.contains("detached"), "{said}");
    // Held for 2 s of a 1 s deadline, then on its own to its exit.
    assert_eq!(mote.status.code(), Some(7), "{}", text(&mote.stderr));
}

#[test]
fn symbols_line_up_with_a_kernel_that_aslr_moves() {
    if !have_gdb() {
        return;
    }
    let guest = guest_path("gdb-target-aslr");
    let mut hits = Vec::new();
    for _ in 0..2 {
        let (mote, port, _lines) = start_mote(&guest, &[]);
        let commands = [
            "break gdb_aslr_function",
            "continue",
            "info registers rip",
            "info address gdb_aslr_function",
            "continue",
        ];
        let gdb = finish(gdb(&guest, port, &commands), "gdb");
        let said = format!("{}{}", text(&gdb.stdout), text(&gdb.stderr));
        let mote = finish(mote, "mote");
        // The breakpoint hits only if GDB moved the symbols to where this run's kernel is.
        assert!(said.contains("Breakpoint 1, "), "{said}");
        let rip = register(&said, "rip", 0);
        // "Symbol "gdb_aslr_function" is at 0x... in a file compiled without debugging."
        let symbol = said
            .lines()
            .find(|line| line.starts_with("Symbol "))
            .and_then(|line| line.split(" 0x").nth(1))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_hexdigit()).next())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .unwrap_or_else(|| panic!("no address in {said}"));
        assert_eq!(rip, symbol, "{said}");
        assert!(said.contains("exited with code 011"), "{said}");
        assert_eq!(mote.status.code(), Some(9), "{}", text(&mote.stderr));
        hits.push(rip);
    }
    assert_ne!(
        hits[0], hits[1],
        "ASLR put the kernel at the same place twice"
    );
}

#[test]
fn gdb_writes_a_read_only_static_and_the_guest_sees_it() {
    if !have_gdb() {
        return;
    }
    let guest = guest_path("gdb-target");
    let (mote, port, _lines) = start_mote(&guest, &[]);
    // GDB_MAGIC is in .rodata, on a page the guest cannot write.
    let commands = [
        "set language c",
        "set {unsigned long}&GDB_MAGIC = 5",
        "print *(unsigned long*)&GDB_MAGIC",
        "continue",
    ];
    let gdb = finish(gdb(&guest, port, &commands), "gdb");
    let said = format!("{}{}", text(&gdb.stdout), text(&gdb.stderr));
    let mote = finish(mote, "mote");
    assert!(said.contains("$1 = 5"), "{said}");
    // The guest checks its sums against the magic value it reads: 1 when it changed.
    assert!(said.contains("exited with code 01"), "{said}");
    assert_eq!(mote.status.code(), Some(1), "{}", text(&mote.stderr));
}

#[test]
fn a_user_mode_guest_breaks_and_steps_through_motes_debug_gate() {
    if !have_gdb() {
        return;
    }
    let guest = guest_path("gdb-target-user");
    let function = relocated_symbol(&guest, "gdb_user_function");
    let (mote, port, _lines) = start_mote(&guest, &[]);
    let examine = format!("x/1xb {function:#x}");
    let commands = [
        "break gdb_user_function",
        "continue",
        "info registers rip cs",
        "stepi",
        "info registers rip cs",
        "stepi",
        "print gdb_target_user::GDB_USER_CALLS.v.value",
        &examine,
        "continue",
        "delete",
        "continue",
    ];
    let gdb = finish(gdb(&guest, port, &commands), "gdb");
    let said = format!("{}{}", text(&gdb.stdout), text(&gdb.stderr));
    let mote = finish(mote, "mote");
    assert!(said.contains("Breakpoint 1, "), "{said}");
    assert_eq!(register(&said, "rip", 0), function, "{said}");
    // Stopped in user mode (CPL3), and stepped on in user mode.
    assert_eq!(register(&said, "cs", 0) & 3, 3, "{said}");
    let stepped = register(&said, "rip", 1);
    assert!(stepped > function && stepped < function + 16, "{said}");
    assert_eq!(register(&said, "cs", 1) & 3, 3, "{said}");
    // Two steps in, past the counter's increment.
    assert!(said.contains("$1 = 1"), "{said}");
    // GDB reads the guest's code, not the `int3` mote patched in.
    assert!(said.contains("gdb_user_function>:\t0x"), "{said}");
    assert!(!said.contains("gdb_user_function>:\t0xcc"), "{said}");
    // The breakpoint hits again at the next call, after stepping over it.
    assert_eq!(said.matches("Breakpoint 1, ").count(), 2, "{said}");
    assert!(said.contains("exited with code 07"), "{said}");
    assert_eq!(mote.status.code(), Some(7), "{}", text(&mote.stderr));
}
