//! `mote inspect`: what a kernel asks for and where mote would put everything, as readable
//! sections or as JSON.

use std::path::Path;
use std::process::ExitCode;

use mote_host::{GuestImage, Mapping, human_size};
use serde_json::{Value, json};

use crate::report::hex;
use crate::{Failure, report};

pub fn inspect(path: &Path, as_json: bool) -> ExitCode {
    let image = match GuestImage::from_file(path) {
        Ok(image) => image,
        Err(error) => return Failure::from(error).report("inspect", as_json),
    };
    if as_json {
        print_line!("{}", report::document("inspect", 0, describe(path, &image)));
    } else {
        print_text!("{}", text(path, &image));
    }
    ExitCode::SUCCESS
}

/// A mapping as a person reads it.
fn mapping(mapping: &Mapping) -> String {
    match mapping {
        Mapping::Dynamic => "anywhere (dynamic)".into(),
        Mapping::FixedAddress(address) => format!("at {address:#x}"),
        other => format!("{other:?}"),
    }
}

/// A mapping as JSON gives it: `"dynamic"`, or the address as a hex string.
fn mapping_json(mapping: &Mapping) -> Value {
    match mapping {
        Mapping::Dynamic => "dynamic".into(),
        Mapping::FixedAddress(address) => hex(*address).into(),
        other => format!("{other:?}").into(),
    }
}

fn text(path: &Path, image: &GuestImage) -> String {
    let config = image.boot_config();
    let about = image.describe();
    let version = config.api_version;
    let mut out = format!("{}\n", path.display());
    let line = |out: &mut String, name: &str, value: String| {
        out.push_str(&format!("  {name:<22}{value}\n"));
    };
    out.push_str("kernel:\n");
    line(
        &mut out,
        "bootloader_api",
        format!(
            "{}.{}.{}{}",
            version.major,
            version.minor,
            version.patch,
            if version.pre_release {
                " (pre-release)"
            } else {
                ""
            }
        ),
    );
    line(
        &mut out,
        "kind",
        if about.position_independent {
            "position-independent (ET_DYN)".into()
        } else {
            "at fixed addresses (ET_EXEC)".into()
        },
    );
    line(
        &mut out,
        "runs in",
        if about.user_mode {
            "user mode (CPL3, mote runtime note)".into()
        } else {
            "kernel mode (CPL0)".into()
        },
    );
    line(&mut out, "entry", hex(about.entry));
    line(
        &mut out,
        "load offset",
        format!("{} above its link addresses", hex(about.kernel_offset)),
    );
    out.push_str("boot config:\n");
    line(&mut out, "stack", human_size(config.kernel_stack_size));
    line(&mut out, "stack placed", mapping(&config.kernel_stack));
    line(&mut out, "kernel base", mapping(&config.kernel_base));
    line(&mut out, "BootInfo", mapping(&config.boot_info));
    line(&mut out, "framebuffer", mapping(&config.framebuffer));
    line(&mut out, "ramdisk", mapping(&config.ramdisk_memory));
    line(
        &mut out,
        "physical memory map",
        config
            .physical_memory
            .as_ref()
            .map_or_else(|| "none".into(), mapping),
    );
    line(
        &mut out,
        "recursive page table",
        config
            .page_table_recursive
            .as_ref()
            .map_or_else(|| "none".into(), mapping),
    );
    line(
        &mut out,
        "ASLR",
        if config.aslr { "on" } else { "off" }.into(),
    );
    if config.dynamic_range_start.is_some() || config.dynamic_range_end.is_some() {
        line(
            &mut out,
            "dynamic range",
            format!(
                "{} to {}",
                config.dynamic_range_start.map_or("start".into(), hex),
                config.dynamic_range_end.map_or("end".into(), hex)
            ),
        );
    }
    out.push_str("segments:\n");
    for (address, bytes, writable, executable) in &about.segments {
        out.push_str(&format!(
            "  {address:#018x}  {:>12}  r{}{}\n",
            human_size(*bytes),
            if *writable { "w" } else { "-" },
            if *executable { "x" } else { "-" }
        ));
    }
    out.push_str(&format!(
        "mappings{}:\n",
        if about.aslr {
            " (ASLR: these move at every run)"
        } else {
            ""
        }
    ));
    for (what, address) in &about.placements {
        out.push_str(&format!("  {address:#018x}  {what}\n"));
    }
    out
}

fn describe(path: &Path, image: &GuestImage) -> Value {
    let config = image.boot_config();
    let about = image.describe();
    let version = config.api_version;
    json!({
        "guest": path.display().to_string(),
        "kernel": {
            "bootloader_api": {
                "major": version.major,
                "minor": version.minor,
                "patch": version.patch,
                "pre_release": version.pre_release,
            },
            "position_independent": about.position_independent,
            "mode": if about.user_mode { "user" } else { "kernel" },
            "entry": hex(about.entry),
            "load_offset": hex(about.kernel_offset),
        },
        "boot_config": {
            "stack_bytes": config.kernel_stack_size,
            "stack": mapping_json(&config.kernel_stack),
            "kernel_base": mapping_json(&config.kernel_base),
            "boot_info": mapping_json(&config.boot_info),
            "framebuffer": mapping_json(&config.framebuffer),
            "ramdisk": mapping_json(&config.ramdisk_memory),
            "physical_memory": config.physical_memory.as_ref().map(mapping_json),
            "page_table_recursive": config.page_table_recursive.as_ref().map(mapping_json),
            "aslr": config.aslr,
            "dynamic_range_start": config.dynamic_range_start.map(hex),
            "dynamic_range_end": config.dynamic_range_end.map(hex),
        },
        "segments": about.segments.iter().map(|(address, bytes, writable, executable)| json!({
            "address": hex(*address),
            "bytes": bytes,
            "writable": writable,
            "executable": executable,
        })).collect::<Vec<_>>(),
        "mappings": about.placements.iter().map(|(what, address)| json!({
            "what": what,
            "address": hex(*address),
        })).collect::<Vec<_>>(),
        "aslr": about.aslr,
    })
}
