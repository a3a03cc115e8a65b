//! The containerd shim under a real containerd: images `mote package` writes are imported and
//! run with `ctr run --runtime io.containerd.mote.v1`; stdin, stdout, exit codes, `ctr task
//! kill`, memory limits and a corrupt image, with nothing left behind.
//!
//! The test runs its own containerd (Debian's `containerd` package, installed if missing),
//! with its root, state and sockets in a temporary directory and the CRI plugin off. Set
//! `MOTE_SKIP_CONTAINERD=1` to skip it where containerd cannot run; without that, a host
//! where it cannot run fails the test, saying why.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mote_tests::{guest_path, mote_bin, text, within};

/// The tests take turns: each counts what shims leave in `/run/containerd/s`, which every
/// containerd shares.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A containerd daemon of the test's own.
struct Containerd {
    daemon: Child,
    dir: PathBuf,
}

impl Containerd {
    /// Starts containerd; with `cri`, with its CRI plugin on and `mote` as a runtime handler.
    fn start(cri: bool) -> Option<Self> {
        if std::env::var_os("MOTE_SKIP_CONTAINERD").is_some() {
            eprintln!("SKIPPED: MOTE_SKIP_CONTAINERD is set; the containerd shim was not tested");
            return None;
        }
        install_containerd();
        let dir = std::env::temp_dir().join(format!(
            "mote-containerd-{}-{}",
            std::process::id(),
            if cri { "cri" } else { "ctr" }
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.toml");
        let plugins = if cri {
            // The sandbox image is one of mote's (the shim runs nothing for it); pods use the
            // host's network, so no CNI plugin is needed.
            format!(
                "[plugins.\"io.containerd.grpc.v1.cri\"]\n\
                 sandbox_image = \"mote.local/pause:latest\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
                 conf_dir = \"{d}/cni\"\nbin_dir = \"{d}/cni\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n\
                 default_runtime_name = \"mote\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.mote]\n\
                 runtime_type = \"io.containerd.mote.v1\"\n",
                d = dir.display()
            )
        } else {
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n".to_owned()
        };
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n{plugins}\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        // containerd finds shims on its PATH: the shim is built beside `mote`.
        let shims = mote_bin().parent().unwrap().to_path_buf();
        assert!(
            shims.join("containerd-shim-mote-v1").is_file(),
            "containerd-shim-mote-v1 is not built: run `cargo build --workspace --bins`"
        );
        let path = format!(
            "{}:{}",
            shims.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .env("PATH", path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd starts");
        let containerd = Self { daemon, dir };
        let ready = Instant::now() + Duration::from_secs(20);
        while !containerd.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < ready,
                "containerd did not answer within 20 s: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(containerd)
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_with_input(args, b"")
    }

    fn ctr_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        self.ctr_in("default", args, input)
    }

    fn ctr_in(&self, namespace: &str, args: &[&str], input: &[u8]) -> Output {
        let mut child = self.spawn_ctr(namespace, args);
        let _ = child.stdin.take().unwrap().write_all(input);
        within(Duration::from_secs(60), move || {
            child.wait_with_output().unwrap()
        })
    }

    /// Starts `ctr ARGS` against this containerd, with its stdin, stdout and stderr piped.
    fn spawn_ctr(&self, namespace: &str, args: &[&str]) -> Child {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", namespace])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ctr starts")
    }

    /// Waits until the task `id` runs.
    fn wait_running(&self, id: &str) {
        let running = Instant::now() + Duration::from_secs(20);
        loop {
            let tasks = text(&self.ctr(&["task", "ls"]).stdout);
            if tasks
                .lines()
                .any(|line| line.starts_with(id) && line.contains("RUNNING"))
            {
                return;
            }
            assert!(Instant::now() < running, "{id} never ran: {tasks}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn import(&self, archive: &Path) {
        self.import_in("default", archive);
    }

    fn import_in(&self, namespace: &str, archive: &Path) {
        let out = self.ctr_in(
            namespace,
            &["image", "import", archive.to_str().unwrap()],
            b"",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    /// Mounts of this containerd's that are still there.
    fn mounts(&self) -> Vec<String> {
        let dir = self.dir.display().to_string();
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(&dir))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // After a failed test a shim may still run a guest that never ends: it goes too.
        let pattern = format!("containerd-shim-mote-v1 .*{}", self.dir.display());
        let _ = Command::new("pkill").args(["-9", "-f", &pattern]).status();
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        for mount in self.mounts() {
            if let Some(target) = mount.split_whitespace().nth(1) {
                let _ = Command::new("umount").args(["-l", target]).status();
            }
        }
        if std::env::var_os("MOTE_KEEP_CONTAINERD").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Installs Debian's containerd if `containerd` is missing.
fn install_containerd() {
    let present = |name: &str| {
        Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if present("containerd") && present("ctr") {
        return;
    }
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-q", "containerd"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    assert!(
        installed.as_ref().is_ok_and(|out| out.status.success()) && present("containerd"),
        "containerd is missing and `apt-get install containerd` did not install it ({}); \
         install Debian's containerd package, or set MOTE_SKIP_CONTAINERD=1 to skip this test",
        installed.map_or_else(|e| e.to_string(), |out| text(&out.stderr))
    );
}

/// `mote package GUEST -o DIR/GUEST.oci.tar`.
fn package(guest: &str, dir: &Path) -> PathBuf {
    package_as(guest, &format!("mote.local/{guest}:latest"), dir)
}

/// `mote package GUEST --name NAME -o DIR/....oci.tar`.
fn package_as(guest: &str, name: &str, dir: &Path) -> PathBuf {
    let archive = dir.join(format!("{}.oci.tar", name.replace(['/', ':'], "-")));
    let out = Command::new(mote_bin())
        .arg("package")
        .arg(guest_path(guest))
        .args(["--name", name])
        .arg("-o")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    archive
}

/// Shim processes of `containerd` still running (each names its containerd's socket).
fn shims(containerd: &Containerd) -> usize {
    let pattern = format!("containerd-shim-mote-v1 .*{}", containerd.dir.display());
    Command::new("pgrep")
        .args(["-c", "-f", &pattern])
        .output()
        .map(|out| text(&out.stdout).trim().parse().unwrap_or(0))
        .unwrap_or(0)
}

#[test]
fn containers_of_mote_guests_run_under_containerd() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(containerd) = Containerd::start(false) else {
        return;
    };
    let shims_before = shims(&containerd);
    let sockets_before = shim_sockets();
    for guest in ["echo", "panic", "spin"] {
        containerd.import(&package(guest, &containerd.dir));
    }
    let images = text(&containerd.ctr(&["image", "ls", "-q"]).stdout);
    assert!(images.contains("mote.local/echo:latest"), "{images}");

    // stdin is the input, stdout the output, the exit code the guest's.
    let runtime = "--runtime=io.containerd.mote.v1";
    let out = containerd.ctr_with_input(
        &["run", "--rm", runtime, "mote.local/echo:latest", "echo-1"],
        b"through containerd",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "through containerd");

    let out = containerd.ctr(&["run", "--rm", runtime, "mote.local/panic:latest", "panic-1"]);
    assert_eq!(out.status.code(), Some(117), "{}", text(&out.stderr));
    // Why the guest ended goes to the container's stderr.
    assert!(
        text(&out.stderr).contains("guest panicked at"),
        "{}",
        text(&out.stderr)
    );

    // The memory limit sizes the guest; too small a limit is refused, saying why.
    let out = containerd.ctr_with_input(
        &[
            "run",
            "--rm",
            runtime,
            "--memory-limit",
            "67108864",
            "mote.local/echo:latest",
            "echo-2",
        ],
        b"with a limit",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "with a limit");
    let out = containerd.ctr(&[
        "run",
        "--rm",
        runtime,
        "--memory-limit",
        "8388608",
        "mote.local/echo:latest",
        "echo-3",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("raise the limit"),
        "{}",
        text(&out.stderr)
    );
    let _ = containerd.ctr(&["container", "rm", "echo-3"]);

    // `ctr task kill` stops a guest that never ends: 143, as for a process SIGTERM ended. The
    // shim, and with it the guest's memory, is in the container's memory cgroup meanwhile.
    let mut spinner = containerd.spawn_ctr(
        "default",
        &[
            "run",
            "--rm",
            runtime,
            "--memory-limit",
            "100000000",
            "mote.local/spin:latest",
            "spin-1",
        ],
    );
    // No input: the guest starts at once.
    drop(spinner.stdin.take());
    containerd.wait_running("spin-1");
    let cgroup = [
        "/sys/fs/cgroup/default/spin-1",
        "/sys/fs/cgroup/memory/default/spin-1",
    ]
    .map(PathBuf::from)
    .into_iter()
    .find(|path| path.is_dir())
    .expect("the container's memory cgroup exists while it runs");
    let limit = ["memory.max", "memory.limit_in_bytes"]
        .iter()
        .find_map(|file| std::fs::read_to_string(cgroup.join(file)).ok())
        .unwrap();
    // The kernel rounds the limit down to whole pages.
    assert_eq!(limit.trim(), (100_000_000u64 & !0xFFF).to_string());
    let members = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    assert_eq!(members.lines().count(), 1, "the shim alone: {members}");
    let out = containerd.ctr(&["task", "kill", "spin-1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = within(Duration::from_secs(20), move || {
        spinner.wait_with_output().unwrap()
    });
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    assert!(!cgroup.exists(), "{} was left behind", cgroup.display());

    // A container still waiting for its input on stdin is stopped by a kill too.
    let mut waiting = containerd.spawn_ctr(
        "default",
        &[
            "run",
            "--rm",
            runtime,
            "mote.local/echo:latest",
            "echo-waiting",
        ],
    );
    let stdin_held = waiting.stdin.take();
    containerd.wait_running("echo-waiting");
    let out = containerd.ctr(&["task", "kill", "echo-waiting"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = within(Duration::from_secs(20), move || {
        waiting.wait_with_output().unwrap()
    });
    drop(stdin_held);
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));

    // A corrupt image fails at create with the reason in containerd's error.
    containerd.import(&corrupt_image(&containerd.dir));
    let out = containerd.ctr(&[
        "run",
        "--rm",
        runtime,
        "mote.local/corrupt:latest",
        "corrupt-1",
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("not a guest mote can boot"), "{stderr}");
    let _ = containerd.ctr(&["container", "rm", "corrupt-1"]);

    // Nothing left: no shim, no mount, no container.
    let settled = Instant::now() + Duration::from_secs(10);
    while shims(&containerd) > shims_before
        || !containerd.mounts().iter().all(|m| !m.contains("rootfs"))
    {
        assert!(
            Instant::now() < settled,
            "left behind: {} shims, mounts {:?}",
            shims(&containerd) - shims_before,
            containerd.mounts()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let containers = text(&containerd.ctr(&["container", "ls", "-q"]).stdout);
    assert_eq!(containers.trim(), "", "containers left: {containers}");
    assert_eq!(
        shim_sockets(),
        sockets_before,
        "a shim left its socket behind"
    );
}

/// The shims' sockets (containerd keeps them in /run/containerd/s whatever its state dir).
fn shim_sockets() -> usize {
    std::fs::read_dir("/run/containerd/s").map_or(0, Iterator::count)
}

/// An image in mote's layout whose `/guest.elf` is not a kernel.
fn corrupt_image(dir: &Path) -> PathBuf {
    use sha2::{Digest, Sha256};
    let hex = |bytes: &[u8]| -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let tar = |files: &[(&str, &[u8])]| -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, contents) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(contents.len() as u64);
            header.set_mode(0o755);
            builder.append_data(&mut header, path, *contents).unwrap();
        }
        builder.into_inner().unwrap()
    };
    let layer = tar(&[("guest.elf", b"#!/bin/sh\necho not a kernel\n")]);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Entrypoint": ["/guest.elf"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", hex(&layer))] },
    })
    .to_string();
    let descriptor = |media: &str, bytes: &[u8]| serde_json::json!({ "mediaType": media, "size": bytes.len(), "digest": format!("sha256:{}", hex(bytes)) });
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", config.as_bytes()),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    })
    .to_string();
    let mut entry = descriptor(
        "application/vnd.oci.image.manifest.v1+json",
        manifest.as_bytes(),
    );
    entry["annotations"] =
        serde_json::json!({ "io.containerd.image.name": "mote.local/corrupt:latest" });
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [entry] }).to_string();
    let blob = |bytes: &[u8]| format!("blobs/sha256/{}", hex(bytes));
    let archive = tar(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", index.as_bytes()),
        (&blob(&layer), &layer),
        (&blob(config.as_bytes()), config.as_bytes()),
        (&blob(manifest.as_bytes()), manifest.as_bytes()),
    ]);
    let path = dir.join("corrupt.oci.tar");
    std::fs::write(&path, archive).unwrap();
    path
}

/// The few messages of Kubernetes' CRI (runtime.v1) the test sends and reads, with the field
/// numbers of its `api.proto`, and a client for its unary calls over containerd's socket.
mod cri {
    use std::collections::HashMap;
    use std::path::Path;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub uid: String,
        #[prost(string, tag = "3")]
        pub namespace: String,
        #[prost(uint32, tag = "4")]
        pub attempt: u32,
    }

    /// `NamespaceMode`: 2 is NODE (the host's).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamespaceOption {
        #[prost(int32, tag = "1")]
        pub network: i32,
        #[prost(int32, tag = "2")]
        pub pid: i32,
        #[prost(int32, tag = "3")]
        pub ipc: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxSandboxSecurityContext {
        #[prost(message, optional, tag = "1")]
        pub namespace_options: Option<NamespaceOption>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxPodSandboxConfig {
        #[prost(message, optional, tag = "2")]
        pub security_context: Option<LinuxSandboxSecurityContext>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxConfig {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<PodSandboxMetadata>,
        #[prost(string, tag = "3")]
        pub log_directory: String,
        #[prost(map = "string, string", tag = "6")]
        pub labels: HashMap<String, String>,
        #[prost(message, optional, tag = "8")]
        pub linux: Option<LinuxPodSandboxConfig>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RunPodSandboxRequest {
        #[prost(message, optional, tag = "1")]
        pub config: Option<PodSandboxConfig>,
        #[prost(string, tag = "2")]
        pub runtime_handler: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RunPodSandboxResponse {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(uint32, tag = "2")]
        pub attempt: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageSpec {
        #[prost(string, tag = "1")]
        pub image: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxContainerResources {
        #[prost(int64, tag = "4")]
        pub memory_limit_in_bytes: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxContainerConfig {
        #[prost(message, optional, tag = "1")]
        pub resources: Option<LinuxContainerResources>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerConfig {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<ContainerMetadata>,
        #[prost(message, optional, tag = "2")]
        pub image: Option<ImageSpec>,
        #[prost(string, tag = "11")]
        pub log_path: String,
        #[prost(message, optional, tag = "15")]
        pub linux: Option<LinuxContainerConfig>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateContainerRequest {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
        #[prost(message, optional, tag = "2")]
        pub config: Option<ContainerConfig>,
        #[prost(message, optional, tag = "3")]
        pub sandbox_config: Option<PodSandboxConfig>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateContainerResponse {
        #[prost(string, tag = "1")]
        pub container_id: String,
    }

    /// StartContainer's, ContainerStatus's (with `verbose` false) and RemoveContainer's request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerId {
        #[prost(string, tag = "1")]
        pub container_id: String,
    }

    /// StopPodSandbox's and RemovePodSandbox's request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxId {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}

    /// `ContainerState`: 2 is EXITED.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatus {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(int32, tag = "3")]
        pub state: i32,
        #[prost(int32, tag = "7")]
        pub exit_code: i32,
        #[prost(string, tag = "10")]
        pub reason: String,
        #[prost(string, tag = "11")]
        pub message: String,
        #[prost(string, tag = "15")]
        pub log_path: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatusResponse {
        #[prost(message, optional, tag = "1")]
        pub status: Option<ContainerStatus>,
    }

    pub const EXITED: i32 = 2;
    pub const NODE: i32 = 2;

    /// A CRI client on containerd's socket.
    pub struct Client {
        runtime: tokio::runtime::Runtime,
        grpc: tonic::client::Grpc<tonic::transport::Channel>,
    }

    impl Client {
        pub fn connect(socket: &Path) -> Self {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let socket = socket.to_path_buf();
            let channel = runtime
                .block_on(
                    // The URI is a placeholder: the connector dials the socket.
                    tonic::transport::Endpoint::from_static("http://localhost")
                        .connect_with_connector(tower::service_fn(move |_| {
                            let socket = socket.clone();
                            async move {
                                tokio::net::UnixStream::connect(socket)
                                    .await
                                    .map(hyper_util::rt::TokioIo::new)
                            }
                        })),
                )
                .expect("containerd's CRI socket answers");
            Self {
                runtime,
                grpc: tonic::client::Grpc::new(channel),
            }
        }

        /// Calls `runtime.v1.RuntimeService/METHOD`.
        pub fn call<Request, Response>(
            &mut self,
            method: &'static str,
            request: Request,
        ) -> Result<Response, tonic::Status>
        where
            Request: prost::Message + Send + Sync + 'static,
            Response: prost::Message + Default + Send + Sync + 'static,
        {
            let path = format!("/runtime.v1.RuntimeService/{method}");
            let grpc = &mut self.grpc;
            self.runtime.block_on(async move {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let path = http::uri::PathAndQuery::try_from(path).unwrap();
                grpc.unary(
                    tonic::Request::new(request),
                    path,
                    tonic_prost::ProstCodec::default(),
                )
                .await
                .map(tonic::Response::into_inner)
            })
        }
    }
}

#[test]
fn a_pod_runs_through_containerds_cri_plugin_as_kubernetes_would_run_it() {
    use cri::*;
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(containerd) = Containerd::start(true) else {
        return;
    };
    let shims_before = shims(&containerd);
    let sockets_before = shim_sockets();
    // Kubernetes' images live in containerd's k8s.io namespace; nothing is pulled.
    for (guest, name) in [
        ("echo", "mote.local/pause:latest"),
        ("hello", "mote.local/hello:latest"),
        ("panic", "mote.local/panic:latest"),
    ] {
        containerd.import_in("k8s.io", &package_as(guest, name, &containerd.dir));
    }
    let logs = containerd.dir.join("pod-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let sandbox = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "mote-pod".into(),
            uid: "mote-pod-uid".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: logs.display().to_string(),
        labels: Default::default(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NODE,
                    pid: 0,
                    ipc: 0,
                }),
            }),
        }),
    };
    let mut client = Client::connect(&containerd.dir.join("containerd.sock"));
    let pod: RunPodSandboxResponse = client
        .call(
            "RunPodSandbox",
            RunPodSandboxRequest {
                config: Some(sandbox.clone()),
                runtime_handler: "mote".into(),
            },
        )
        .unwrap_or_else(|status| panic!("RunPodSandbox: {status}\n{}", containerd.log()));

    // Each container of the pod is a guest; its console is the container's log.
    let mut run = |name: &str, image: &str| -> ContainerStatus {
        let created: CreateContainerResponse = client
            .call(
                "CreateContainer",
                CreateContainerRequest {
                    pod_sandbox_id: pod.pod_sandbox_id.clone(),
                    config: Some(ContainerConfig {
                        metadata: Some(ContainerMetadata {
                            name: name.into(),
                            attempt: 0,
                        }),
                        image: Some(ImageSpec {
                            image: image.into(),
                        }),
                        log_path: format!("{name}.log"),
                        linux: Some(LinuxContainerConfig {
                            resources: Some(LinuxContainerResources {
                                memory_limit_in_bytes: 64 << 20,
                            }),
                        }),
                    }),
                    sandbox_config: Some(sandbox.clone()),
                },
            )
            .unwrap_or_else(|status| panic!("CreateContainer: {status}\n{}", containerd.log()));
        let id = ContainerId {
            container_id: created.container_id,
        };
        let _: Empty = client
            .call("StartContainer", id.clone())
            .unwrap_or_else(|status| panic!("StartContainer: {status}"));
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            let status: ContainerStatusResponse =
                client.call("ContainerStatus", id.clone()).unwrap();
            let status = status.status.unwrap();
            if status.state == EXITED {
                let _: Empty = client.call("RemoveContainer", id.clone()).unwrap();
                break status;
            }
            assert!(Instant::now() < give_up, "{name} never exited: {status:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let hello = run("hello", "mote.local/hello:latest");
    assert_eq!(hello.exit_code, 0, "{hello:?}");
    let log = std::fs::read_to_string(logs.join("hello.log")).unwrap();
    assert!(log.contains("stdout F Hello from a mote guest!"), "{log}");
    let panicked = run("panic", "mote.local/panic:latest");
    assert_eq!(panicked.exit_code, 117, "{panicked:?}");
    let log = std::fs::read_to_string(logs.join("panic.log")).unwrap();
    assert!(log.contains("stderr F mote: guest panicked at"), "{log}");

    let id = PodSandboxId {
        pod_sandbox_id: pod.pod_sandbox_id,
    };
    let _: Empty = client
        .call("StopPodSandbox", id.clone())
        .unwrap_or_else(|status| panic!("StopPodSandbox: {status}\n{}", containerd.log()));
    let _: Empty = client
        .call("RemovePodSandbox", id)
        .unwrap_or_else(|status| panic!("RemovePodSandbox: {status}\n{}", containerd.log()));
    let settled = Instant::now() + Duration::from_secs(10);
    while shims(&containerd) > shims_before {
        assert!(Instant::now() < settled, "a shim outlived its pod");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        shim_sockets(),
        sockets_before,
        "a shim left its socket behind"
    );
}
