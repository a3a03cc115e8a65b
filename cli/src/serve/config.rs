//! What `mote serve` serves: its TOML configuration file, the `--function` flags, and the
//! checks that refuse a bad one before anything listens.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::parse;

/// A size: bytes, or a string such as `"16M"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self, what: &str) -> Result<u64, String> {
        match self {
            Size::Bytes(bytes) => Ok(*bytes),
            Size::Text(text) => parse::size(text).map_err(|e| format!("{what}: {e}")),
        }
    }
}

fn duration(text: &Option<String>, what: &str, default: Duration) -> Result<Duration, String> {
    text.as_deref()
        .map_or(Ok(default), parse::duration)
        .map_err(|e| format!("{what}: {e}"))
}

/// A duration that may be zero (a shutdown that waits for nothing).
fn duration_or_zero(
    text: &Option<String>,
    what: &str,
    default: Duration,
) -> Result<Duration, String> {
    match text.as_deref() {
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| format!("{what}: `{text}` is not a duration ({e}); write e.g. 0s or 10s")),
        None => Ok(default),
    }
}

/// The configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    workers: Option<usize>,
    http_threads: Option<usize>,
    max_requests: Option<usize>,
    queue_timeout: Option<String>,
    read_timeout: Option<String>,
    shutdown_grace: Option<String>,
    memory_budget: Option<Size>,
    #[serde(default)]
    functions: BTreeMap<String, FunctionFile>,
}

/// One function, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionFile {
    guest: PathBuf,
    memory: Option<Size>,
    timeout: Option<String>,
    input_limit: Option<Size>,
    output_limit: Option<Size>,
    console_limit: Option<Size>,
    hypercall_limit: Option<u64>,
    warm: Option<bool>,
}

/// The server's settings, checked.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Threads that run guests; each runs one at a time.
    pub workers: usize,
    /// Threads that serve HTTP (the async runtime's).
    pub http_threads: usize,
    /// Requests in flight at once (reading, waiting for a worker, running); more get 503.
    pub max_requests: usize,
    /// The longest a request waits for a worker before it gets 503.
    pub queue_timeout: Duration,
    /// The longest a client may take to send a request's headers, and then its body.
    pub read_timeout: Duration,
    /// How long in-flight runs may finish after SIGTERM before they are cancelled.
    pub shutdown_grace: Duration,
    pub memory_budget: Option<u64>,
    pub functions: BTreeMap<String, Function>,
}

/// One function's guest and limits.
#[derive(Clone, Debug)]
pub struct Function {
    pub guest: PathBuf,
    pub memory: Option<u64>,
    pub timeout: Duration,
    pub input_limit: u64,
    pub output_limit: u64,
    pub console_limit: u64,
    pub hypercall_limit: Option<u64>,
    /// Snapshot the guest once and run calls on a pool of VMs restored from it.
    pub warm: bool,
}

/// A function's defaults: those of a run, but a shorter deadline and a console that a server
/// mostly throws away.
impl Function {
    fn new(guest: PathBuf) -> Self {
        Self {
            guest,
            memory: None,
            timeout: Duration::from_secs(10),
            input_limit: 1 << 20,
            output_limit: mote_host::DEFAULT_OUTPUT_LIMIT,
            console_limit: 64 << 10,
            hypercall_limit: None,
            warm: true,
        }
    }
}

/// A function name: what goes in `/functions/NAME`.
fn check_name(name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "function name `{name}`: use 1 to 64 letters, digits, `-`, `_` or `.`"
        ))
    }
}

impl Config {
    /// The configuration from `file` (if given), with `--function NAME=GUEST` flags and
    /// `--listen`, `--workers` over it.
    pub fn load(
        file: Option<&Path>,
        functions: &[String],
        listen: Option<&str>,
        workers: Option<usize>,
    ) -> Result<Self, String> {
        let (written, base) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let written: File = toml::from_str(&text)
                    .map_err(|e| format!("{}: {}", path.display(), e.message()))?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (written, base)
            }
            None => (File::default(), PathBuf::new()),
        };
        let mut config = Config {
            listen: listen
                .or(written.listen.as_deref())
                .unwrap_or("127.0.0.1:8080")
                .parse()
                .map_err(|e| format!("listen address: {e} (write e.g. 127.0.0.1:8080)"))?,
            workers: workers.or(written.workers).unwrap_or_else(default_workers),
            http_threads: written.http_threads.unwrap_or_else(default_http_threads),
            max_requests: written.max_requests.unwrap_or(1024),
            queue_timeout: duration(
                &written.queue_timeout,
                "queue_timeout",
                Duration::from_secs(1),
            )?,
            read_timeout: duration(
                &written.read_timeout,
                "read_timeout",
                Duration::from_secs(10),
            )?,
            shutdown_grace: duration_or_zero(
                &written.shutdown_grace,
                "shutdown_grace",
                Duration::from_secs(10),
            )?,
            memory_budget: written
                .memory_budget
                .as_ref()
                .map(|size| size.bytes("memory_budget"))
                .transpose()?,
            functions: BTreeMap::new(),
        };
        if config.workers == 0 || config.max_requests == 0 || config.http_threads == 0 {
            return Err("workers, http_threads and max_requests must be at least 1".into());
        }
        for (name, function) in written.functions {
            check_name(&name)?;
            let what = |field: &str| format!("function {name}: {field}");
            let mut checked = Function::new(base.join(&function.guest));
            if let Some(size) = &function.memory {
                checked.memory = Some(size.bytes(&what("memory"))?);
            }
            checked.timeout = duration(&function.timeout, &what("timeout"), checked.timeout)?;
            for (field, value, into) in [
                (
                    "input_limit",
                    &function.input_limit,
                    &mut checked.input_limit,
                ),
                (
                    "output_limit",
                    &function.output_limit,
                    &mut checked.output_limit,
                ),
                (
                    "console_limit",
                    &function.console_limit,
                    &mut checked.console_limit,
                ),
            ] {
                if let Some(size) = value {
                    *into = size.bytes(&what(field))?;
                }
            }
            checked.hypercall_limit = function.hypercall_limit;
            checked.warm = function.warm.unwrap_or(true);
            config.functions.insert(name, checked);
        }
        for flag in functions {
            let (name, guest) = flag
                .split_once('=')
                .ok_or_else(|| format!("--function {flag}: write NAME=GUEST.elf"))?;
            check_name(name)?;
            config
                .functions
                .insert(name.to_owned(), Function::new(PathBuf::from(guest)));
        }
        if config.functions.is_empty() {
            return Err(
                "no functions to serve: give --function NAME=GUEST.elf or a --config file with \
                 [functions.NAME] tables"
                    .into(),
            );
        }
        Ok(config)
    }
}

/// Two workers per CPU: a guest that spins to its deadline holds its worker, and the others
/// should go on.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get() * 2)
}

/// One HTTP thread per two CPUs: serving a call's HTTP costs about a third of running it, and
/// fewer HTTP threads wake each other less (measured on 2 cores: one thread answered 5-8 %
/// more calls than two).
fn default_http_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, flags: &[&str]) -> Result<Config, String> {
        let dir = std::env::temp_dir().join(format!("mote-serve-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.toml", text.len()));
        std::fs::write(&path, text).unwrap();
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let result = Config::load(Some(&path), &flags, None, None);
        let _ = std::fs::remove_file(&path);
        result
    }

    #[test]
    fn a_config_file_sets_functions_and_limits_relative_to_itself() {
        let config = load(
            r#"
            listen = "127.0.0.1:9000"
            workers = 3
            memory_budget = "1G"
            [functions.echo]
            guest = "guests/echo"
            memory = "16M"
            timeout = "250ms"
            input_limit = 4096
            warm = false
            "#,
            &["hello=/abs/hello"],
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.workers, 3);
        assert_eq!(config.memory_budget, Some(1 << 30));
        let echo = &config.functions["echo"];
        assert!(echo.guest.ends_with("guests/echo"));
        assert!(echo.guest.is_absolute() || echo.guest.starts_with(std::env::temp_dir()));
        assert_eq!(echo.memory, Some(16 << 20));
        assert_eq!(echo.timeout, Duration::from_millis(250));
        assert_eq!(echo.input_limit, 4096);
        assert!(!echo.warm);
        assert_eq!(config.functions["hello"].guest, PathBuf::from("/abs/hello"));
        assert!(config.functions["hello"].warm);
    }

    #[test]
    fn bad_configs_are_refused_with_what_is_wrong() {
        for (text, flags, expected) in [
            ("", &[][..], "no functions"),
            ("unknown = 1", &[], "unknown field"),
            (
                "[functions.x]\nguest = \"g\"\nmemory = \"lots\"",
                &[],
                "function x: memory",
            ),
            (
                "[functions.x]\nguest = \"g\"\ntimeout = \"0s\"",
                &[],
                "function x: timeout",
            ),
            ("", &["noequals"], "NAME=GUEST"),
            ("", &["bad/name=g"], "function name"),
            (
                "listen = \"nowhere\"\n[functions.x]\nguest = \"g\"",
                &[],
                "listen address",
            ),
            (
                "workers = 0\n[functions.x]\nguest = \"g\"",
                &[],
                "at least 1",
            ),
        ] {
            let error = load(text, flags).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
