//! `mote package`: a guest kernel as an OCI image, written as an image-layout tar that
//! `ctr image import` (or any OCI tool) takes without a registry. The image has one layer
//! holding the guest at `/guest.elf`, which its config names as the entrypoint; the containerd
//! shim (`containerd-shim-mote-v1`) runs that file as a mote guest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mote_host::{Class, GuestImage};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
    Sha256Digest,
};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::{Failure, report};

/// Where the guest sits in the image, and what the image runs.
pub const GUEST_IN_IMAGE: &str = "/guest.elf";

/// `mote package`'s options.
#[derive(clap::Args)]
pub struct PackageArgs {
    /// The guest kernel ELF file.
    guest: PathBuf,
    /// The image archive to write (an OCI image layout, as a tar file).
    #[arg(short, long, value_name = "FILE.tar")]
    output: PathBuf,
    /// The image's name, as `ctr image import` will list it
    /// [default: mote.local/GUEST-FILE-NAME:latest].
    #[arg(long, value_name = "NAME:TAG")]
    name: Option<String>,
    /// Print the result as a JSON object on standard output; see docs/json.md.
    #[arg(long)]
    json: bool,
}

pub fn package(args: &PackageArgs) -> ExitCode {
    match build(args) {
        Ok((name, digest)) => {
            if args.json {
                print_line!(
                    "{}",
                    report::document(
                        "package",
                        0,
                        json!({
                            "guest": args.guest.display().to_string(),
                            "image": {
                                "path": args.output.display().to_string(),
                                "name": name,
                                "manifest_digest": digest,
                            },
                        }),
                    )
                );
            } else {
                say!(
                    "mote: {} packaged as {name} in {}; import it with `ctr image import {}`",
                    args.guest.display(),
                    args.output.display(),
                    args.output.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(failure) => failure.report("package", args.json),
    }
}

/// The image name for `guest`: `mote.local/STEM:latest`, lower-cased, with characters an
/// image name may not hold replaced.
fn default_name(guest: &Path) -> String {
    let stem = guest
        .file_stem()
        .map(|stem| stem.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches(|c| matches!(c, '.' | '_' | '-'));
    format!(
        "mote.local/{}:latest",
        if clean.is_empty() { "guest" } else { clean }
    )
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn oci_error(error: oci_spec::OciSpecError) -> Failure {
    Failure::host("package", format!("cannot describe the image: {error}"))
}

/// A descriptor of `bytes` as `media_type`, and its hex digest.
fn describe(media_type: MediaType, bytes: &[u8]) -> Result<(Descriptor, String), Failure> {
    let hex = sha256(bytes);
    let digest: Sha256Digest = hex.parse().map_err(oci_error)?;
    Ok((Descriptor::new(media_type, bytes.len() as u64, digest), hex))
}

/// A tar archive of `files` (path, mode, contents), with fixed times and owners so the same
/// guest always makes the same image.
fn tar(files: &[(&str, u32, &[u8])]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mode, contents) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(contents.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *contents)?;
    }
    builder.into_inner()
}

/// Writes the image; its name and manifest digest.
fn build(args: &PackageArgs) -> Result<(String, String), Failure> {
    let guest = std::fs::read(&args.guest).map_err(|e| {
        Failure::new(
            "read_guest",
            Class::Usage,
            format!("cannot read guest {}: {e}", args.guest.display()),
        )
    })?;
    // Only a guest mote can boot is worth packaging: the bytes packaged are the bytes checked.
    GuestImage::from_bytes(&args.guest.display().to_string(), guest.clone())?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&args.guest));
    let tag = name
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or("latest", |(_, tag)| tag)
        .to_owned();
    let write_failed =
        |e: std::io::Error| Failure::host("package", format!("cannot build the image: {e}"));

    let layer =
        tar(&[(GUEST_IN_IMAGE.trim_start_matches('/'), 0o755, &guest)]).map_err(write_failed)?;
    let (layer_descriptor, layer_hex) = describe(MediaType::ImageLayer, &layer)?;

    let labels = HashMap::from([("io.mote.guest".to_owned(), GUEST_IN_IMAGE.to_owned())]);
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .entrypoint(vec![GUEST_IN_IMAGE.to_owned()])
                .labels(labels)
                .build()
                .map_err(oci_error)?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![format!("sha256:{layer_hex}")])
                .build()
                .map_err(oci_error)?,
        )
        .build()
        .map_err(oci_error)?
        .to_string()
        .map_err(oci_error)?;
    let (config_descriptor, config_hex) = describe(MediaType::ImageConfig, config.as_bytes())?;

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_descriptor)
        .layers(vec![layer_descriptor])
        .build()
        .map_err(oci_error)?
        .to_string()
        .map_err(oci_error)?;
    let manifest_hex = sha256(manifest.as_bytes());
    let manifest_descriptor = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .size(manifest.len() as u64)
        .digest(manifest_hex.parse::<Sha256Digest>().map_err(oci_error)?)
        .platform(
            PlatformBuilder::default()
                .architecture(Arch::Amd64)
                .os(Os::Linux)
                .build()
                .map_err(oci_error)?,
        )
        .annotations(HashMap::from([
            // containerd names the imported image by this; other tools by the tag.
            ("io.containerd.image.name".to_owned(), name.clone()),
            ("org.opencontainers.image.ref.name".to_owned(), tag),
        ]))
        .build()
        .map_err(oci_error)?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_descriptor])
        .build()
        .map_err(oci_error)?
        .to_string()
        .map_err(oci_error)?;
    let layout = r#"{"imageLayoutVersion":"1.0.0"}"#;

    let blob = |hex: &str| format!("blobs/sha256/{hex}");
    let (layer_path, config_path, manifest_path) =
        (blob(&layer_hex), blob(&config_hex), blob(&manifest_hex));
    let archive = tar(&[
        ("oci-layout", 0o644, layout.as_bytes()),
        ("index.json", 0o644, index.as_bytes()),
        (&layer_path, 0o644, &layer),
        (&config_path, 0o644, config.as_bytes()),
        (&manifest_path, 0o644, manifest.as_bytes()),
    ])
    .map_err(write_failed)?;
    std::fs::write(&args.output, archive).map_err(|e| {
        Failure::new(
            "write_result",
            Class::Usage,
            format!("cannot write {}: {e}", args.output.display()),
        )
    })?;
    Ok((name, format!("sha256:{manifest_hex}")))
}

#[cfg(test)]
mod tests {
    use super::default_name;
    use std::path::Path;

    #[test]
    fn image_names_come_from_the_guest_file() {
        assert_eq!(
            default_name(Path::new("a/Hello.elf")),
            "mote.local/hello:latest"
        );
        assert_eq!(default_name(Path::new("x y+z")), "mote.local/x-y-z:latest");
        assert_eq!(default_name(Path::new("+++")), "mote.local/guest:latest");
    }
}
