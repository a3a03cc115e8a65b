//! The crates as others get them: the library builds for an embedder without the command
//! line's dependencies, and each published crate packages with its metadata, readme and
//! licenses.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mote_tests::guest_path;

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

fn stdout_of(command: &mut Command) -> String {
    let output = command.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("cargo prints UTF-8")
}

/// What only the `mote` command needs; an embedder of the library must not build any of it.
const COMMAND_LINE_ONLY: [&str; 11] = [
    "clap",
    "png",
    "serde_json",
    "tracing-subscriber",
    "humantime",
    "anyhow",
    "mote-cli",
    "tokio",
    "hyper",
    "containerd-shim",
    "oci-spec",
];

#[test]
fn an_embedder_outside_the_workspace_builds_against_the_library_alone_and_runs_a_guest() {
    let manifest = repository().join("tests/embedder/Cargo.toml");
    let tree = stdout_of(
        cargo()
            .args(["tree", "--edges", "normal,build", "--prefix", "none"])
            .args(["--format", "{p}", "--manifest-path"])
            .arg(&manifest),
    );
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"mote-host"), "{tree}");
    for unwanted in COMMAND_LINE_ONLY {
        assert!(
            !crates.contains(&unwanted),
            "an embedder of mote-host builds {unwanted}:\n{tree}"
        );
    }

    // The workspace's target directory (cargo holds no lock on it while tests run): the
    // dependencies the workspace built are reused where their features match.
    let target = repository().join("target");
    stdout_of(
        cargo()
            .args(["build", "--quiet", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target),
    );
    let mut child = Command::new(target.join("debug/mote-embedder-example"))
        .arg(guest_path("echo"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the embedder starts");
    std::io::Write::write_all(
        child.stdin.as_mut().expect("stdin is piped"),
        b"through an embedder",
    )
    .expect("the embedder reads its input");
    drop(child.stdin.take());
    let output = child.wait_with_output().expect("the embedder ends");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"through an embedder");
}

/// The crates others depend on, and the workspace each lives in.
const PUBLISHED: [(&str, &str); 6] = [
    ("mote-abi", "."),
    ("mote-boot", "."),
    ("mote-host", "."),
    ("mote-cli", "."),
    ("mote-shim", "."),
    ("mote-guest", "guest"),
];

#[test]
fn each_published_crate_packages_with_its_metadata_readme_and_licenses() {
    for (name, workspace) in PUBLISHED {
        let directory = repository().join(workspace);
        let metadata: serde_json::Value =
            serde_json::from_str(&stdout_of(cargo().current_dir(&directory).args([
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
            ])))
            .expect("cargo metadata prints JSON");
        let package = metadata["packages"]
            .as_array()
            .and_then(|packages| packages.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("{name} is not a package of {workspace}"));
        for field in ["description", "repository", "license", "readme"] {
            assert!(
                package[field]
                    .as_str()
                    .is_some_and(|value| !value.is_empty()),
                "{name} has no {field}"
            );
        }
        assert!(
            package["repository"]
                .as_str()
                .is_some_and(|url| url.starts_with("https://github.com/")),
            "{name}: {}",
            package["repository"]
        );
        assert!(
            package["keywords"]
                .as_array()
                .is_some_and(|keywords| !keywords.is_empty()),
            "{name} has no keywords"
        );
        assert_ne!(
            package["publish"],
            serde_json::json!([]),
            "{name} is marked publish = false"
        );

        let files = stdout_of(cargo().current_dir(&directory).args([
            "package",
            "--list",
            "--allow-dirty",
            "--package",
            name,
        ]));
        for wanted in [
            "Cargo.toml",
            "README.md",
            "LICENSE-MIT",
            "LICENSE-APACHE",
            "src/lib.rs",
        ] {
            let binary = ["mote-cli", "mote-shim"].contains(&name);
            let wanted = if binary && wanted == "src/lib.rs" {
                "src/main.rs"
            } else {
                wanted
            };
            assert!(
                files.lines().any(|line| line == wanted),
                "{name}'s package lacks {wanted}:\n{files}"
            );
        }
    }
}
