//! What `mote` reports: the exit-code table, error messages with their causes, and the JSON
//! objects of `--json` (their schema is docs/json.md and docs/json-schema.json).

use std::path::Path;

use base64::Engine;
use mote_host::{Class, Exit, Limit, Stats};
use serde_json::{Value, json};

/// The version of the JSON objects `--json` prints; a change that could break a reader bumps it.
pub const JSON_VERSION: u64 = 1;

/// The exit codes, as `mote --help` shows them (docs/exit-codes.md says the same).
pub const EXIT_CODES: &str = "\
Exit codes:
  0-111  the guest's own exit code (the `exit` hypercall, or isa-debug-exit at port 0xF4:
         0x10 means 0, 0x11 means 1, any other value v means v << 1 | 1);
         guest codes above 111 are reported as 111
  112    usage: a wrong option value, or a file named on the command line that cannot be
         read or written, or a guest or input too big for the memory and limits given
  113    bad image: the guest or snapshot file is not one mote can boot here
  114    no KVM: /dev/kvm is missing or not accessible, or lacks what mote needs
  115    host failure: mote or the host failed (a KVM call, host memory, a closed console)
  116    busy: no room now (memory budget, pool); trying again later may work
  117    guest fault: the guest panicked, took a CPU exception, triple-faulted, touched a
         port or address nothing serves, ran what KVM cannot, or halted for good
  118    limit: the guest used up --console-limit, --output-limit or --hypercall-limit,
         or reported more timing samples or sample names than a run may
  119    timeout: the guest ran past --timeout (30 s unless told otherwise)
  120    cancelled: the run was cancelled
  121-125 kept for classes to come
  130, 143  mote was stopped by SIGINT (Ctrl-C) or SIGTERM; the guest was stopped with it
--json gives the exact outcome (`exit.kind`) beside the class (`exit.class`).";

/// An address or other 64-bit machine value as mote writes it, in text and in JSON alike: a hex
/// string (a JSON number cannot hold every 64-bit value).
pub fn hex(value: u64) -> String {
    format!("{value:#x}")
}

/// The `exit` object: how the run ended, with the fields of its kind.
pub fn exit(exit: &Exit) -> Value {
    let mut object = json!({
        "kind": exit.kind(),
        "class": exit.class().name(),
        "message": exit.to_string(),
    });
    let fields = match exit {
        Exit::Guest { code } => json!({ "code": code }),
        Exit::DebugExit { value } => {
            json!({ "value": value, "code": mote_abi::debug_exit_code(*value) })
        }
        Exit::Halted {
            rip,
            interrupts_enabled,
        } => json!({ "rip": hex(*rip), "interrupts_enabled": interrupts_enabled }),
        Exit::InternalError { suberror, rip } => {
            json!({ "suberror": suberror, "rip": hex(*rip) })
        }
        Exit::FailedEntry { reason } => json!({ "reason": hex(*reason) }),
        Exit::UnservedPort { port, write, size } => {
            json!({ "port": port, "write": write, "size": size })
        }
        Exit::UnservedMmio {
            address: at,
            write,
            size,
        } => json!({ "address": hex(*at), "write": write, "size": size }),
        Exit::Aborted {
            message,
            file,
            line,
        } => json!({ "panic": { "message": message, "file": file, "line": line } }),
        Exit::Exception {
            vector,
            error_code,
            rip,
            cr2,
            stack_overflow,
        } => {
            let mut fields = json!({
                "vector": vector,
                "name": mote_abi::note::exception_name(*vector),
                "rip": hex(*rip),
                "stack_overflow": stack_overflow,
            });
            if mote_abi::note::exception_has_error_code(*vector) {
                fields["error_code"] = hex(*error_code).into();
            }
            if *vector == 14 {
                fields["cr2"] = hex(*cr2).into();
            }
            fields
        }
        Exit::Timeout { limit } => {
            json!({ "limit_ns": u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX) })
        }
        Exit::LimitExceeded(limit) => {
            let (name, value) = match limit {
                Limit::ConsoleBytes(n) => ("console_bytes", *n),
                Limit::OutputBytes(n) => ("output_bytes", *n),
                Limit::Hypercalls(n) => ("hypercalls", *n),
                Limit::Samples(n) => ("samples", *n),
                Limit::SampleNames(n) => ("sample_names", *n),
                _ => ("other", 0),
            };
            json!({ "limit": { "name": name, "value": value } })
        }
        Exit::ConsoleClosed { error } => json!({ "error": error }),
        Exit::HostFunctionPanicked { function } => json!({ "function": function }),
        Exit::Unexpected { reason } => json!({ "reason": reason }),
        _ => json!({}),
    };
    merge(&mut object, fields);
    object
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// The `error` object: why the command could not run the guest to an outcome.
pub fn error(kind: &str, class: Class, message: &str) -> Value {
    json!({ "kind": kind, "class": class.name(), "message": message })
}

/// The `stats` object: time per phase in nanoseconds, exits by kind, pages a pool reset.
pub fn stats(stats: &Stats) -> Value {
    let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let phases = &stats.phases;
    json!({
        "phases_ns": {
            "memory": nanos(phases.memory),
            "vm": nanos(phases.vm),
            "vcpu": nanos(phases.vcpu),
            "run": nanos(phases.run),
            "ready": phases.ready.map(nanos),
            "reset": nanos(phases.reset),
        },
        "exits": {
            "total": stats.exits.total,
            "hypercalls": stats.exits.hypercalls,
            "serial": stats.exits.serial,
        },
        "dirtied_pages": stats.dirtied_pages,
    })
}

/// The `samples` object: how many timing samples the guest reported.
pub fn samples(samples: &[mote_host::Sample]) -> Value {
    json!({ "count": samples.len() })
}

/// The `output` object: the guest's output, inline as base64, or where it was written.
pub fn output(bytes: &[u8], written_to: Option<&Path>) -> Value {
    match written_to {
        Some(path) => json!({ "bytes": bytes.len(), "path": path.display().to_string() }),
        None => json!({
            "bytes": bytes.len(),
            "base64": base64::engine::general_purpose::STANDARD.encode(bytes),
        }),
    }
}

/// The keys of each command's result besides those every object has; `null` where the
/// command failed before it had them.
fn result_keys(command: &str) -> &'static [&'static str] {
    match command {
        "run" => &["guest", "exit", "output", "samples", "stats"],
        "snapshot" => &["guest", "snapshot"],
        "package" => &["guest", "image"],
        "inspect" => &[
            "guest",
            "kernel",
            "boot_config",
            "segments",
            "mappings",
            "aslr",
        ],
        _ => &[],
    }
}

/// The top-level object every `--json` command prints: the same keys for a command's result
/// and for an error before anything ran (`error` set, the result's keys `null`).
pub fn document(command: &str, exit_code: u8, fields: Value) -> Value {
    let mut object = json!({
        "version": JSON_VERSION,
        "command": command,
        "exit_code": exit_code,
        "error": null,
    });
    for key in result_keys(command) {
        object[*key] = Value::Null;
    }
    merge(&mut object, fields);
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: &str) -> String {
        let path = format!("{}/../docs/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn every_limit_has_its_name_in_the_schema_and_the_docs() {
        let schema: Value = serde_json::from_str(&doc("json-schema.json")).unwrap();
        let exits = schema["$defs"]["exit"]["oneOf"].as_array().unwrap();
        let limit_case = exits
            .iter()
            .find(|case| case["properties"]["kind"]["const"] == "limit")
            .unwrap();
        let names = &limit_case["properties"]["limit"]["properties"]["name"]["enum"];
        let (json_md, exit_codes_md) = (doc("json.md"), doc("exit-codes.md"));
        let limits = [
            Limit::ConsoleBytes(1),
            Limit::OutputBytes(2),
            Limit::Hypercalls(3),
            Limit::Samples(4),
            Limit::SampleNames(5),
        ];
        for (value, limit) in (1u64..).zip(limits) {
            let object = exit(&Exit::LimitExceeded(limit));
            let name = object["limit"]["name"].as_str().unwrap();
            assert_eq!(object["limit"]["value"], value, "{limit:?}");
            assert!(
                names.as_array().unwrap().iter().any(|n| n == name),
                "the schema lacks the limit name {name}"
            );
            let quoted = format!("`{name}`");
            assert!(json_md.contains(&quoted), "docs/json.md lacks {quoted}");
            assert!(
                exit_codes_md.contains(&quoted),
                "docs/exit-codes.md lacks {quoted}"
            );
        }
    }
}
