//! The functions a server runs: each guest loaded once and, where it can be, snapshotted at
//! its ready point and served from a pool of VMs restored from that snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use mote_host::{CancelToken, Error, GuestImage, Hypervisor, Outcome, Pool, PoolConfig, RunConfig};

use super::config;

/// How a function's calls run.
enum Engine {
    /// On VMs restored from its snapshot, kept in a pool.
    Warm(Pool),
    /// On a fresh VM per call, booted from the image (a guest that cannot be snapshotted).
    Cold(Box<GuestImage>),
}

/// A function, ready to call.
pub struct Function {
    pub name: String,
    pub settings: config::Function,
    engine: Engine,
    hypervisor: Hypervisor,
}

/// Why a function cannot be served: said at start-up, naming it.
pub struct SetupError {
    pub message: String,
    pub error: Option<Error>,
}

impl Function {
    /// Loads the function's guest and, if it is warm, snapshots it and makes its pool of up to
    /// `vms` VMs.
    pub fn load(
        hypervisor: &Hypervisor,
        name: &str,
        settings: &config::Function,
        vms: usize,
    ) -> Result<Self, SetupError> {
        let fail = |error: Error| SetupError {
            message: format!("function {name}: {}", error.full_message()),
            error: Some(error),
        };
        let image = GuestImage::from_file(&settings.guest).map_err(fail)?;
        let engine = if settings.warm {
            // The snapshot's input window holds the largest input the function takes.
            let boot = base_config(settings)
                .map_err(fail)?
                .input_capacity(settings.input_limit);
            match hypervisor.snapshot(&image, boot) {
                Ok(snapshot) => {
                    let pool = Pool::new(
                        hypervisor,
                        &snapshot,
                        PoolConfig::default().max_vms(vms).min_idle(1),
                    )
                    .map_err(fail)?;
                    Engine::Warm(pool)
                }
                // A guest that ends its boot without getting ready for input (one not built on
                // mote-guest) is still a function: each call boots it.
                Err(Error::NotReady(outcome)) if outcome.exit.guest_code().is_some() => {
                    tracing::warn!(
                        function = name,
                        "the guest exits before it is ready for input, so it cannot be \
                         snapshotted: each call boots it"
                    );
                    Engine::Cold(Box::new(image))
                }
                Err(error) => return Err(fail(error)),
            }
        } else {
            Engine::Cold(Box::new(image))
        };
        Ok(Self {
            name: name.to_owned(),
            settings: settings.clone(),
            engine,
            hypervisor: hypervisor.clone(),
        })
    }

    /// Whether calls run on a pool of restored VMs.
    pub fn warm(&self) -> bool {
        matches!(self.engine, Engine::Warm(_))
    }

    /// The pool's VMs, idle and busy, for a warm function.
    pub fn pool_size(&self) -> Option<(usize, usize)> {
        match &self.engine {
            Engine::Warm(pool) => Some(pool.size()),
            Engine::Cold(_) => None,
        }
    }

    /// Runs one call with `input`, stopped early by `cancel`.
    pub fn call(&self, input: Vec<u8>, cancel: CancelToken) -> Result<Outcome, Error> {
        let settings = &self.settings;
        match &self.engine {
            // A restored run keeps the snapshot's memory.
            Engine::Warm(pool) => pool.run(limits(settings)?.input(input).cancel_token(cancel)),
            Engine::Cold(image) => self.hypervisor.run(
                image,
                base_config(settings)?.input(input).cancel_token(cancel),
            ),
        }
    }
}

/// A run's limits from the function's settings. The console is collected and dropped: a
/// server has no terminal to show it on (a guest's console is for its developer).
fn limits(settings: &config::Function) -> Result<RunConfig, Error> {
    let mut config = RunConfig::default()
        .timeout(settings.timeout)?
        .input_limit(settings.input_limit)
        .output_limit(settings.output_limit)
        .console_limit(settings.console_limit);
    if let Some(count) = settings.hypercall_limit {
        config = config.hypercall_limit(count);
    }
    Ok(config)
}

/// The configuration a warm function's snapshot boots with: its limits and memory.
fn base_config(settings: &config::Function) -> Result<RunConfig, Error> {
    let config = limits(settings)?;
    match settings.memory {
        Some(bytes) => config.memory_size(bytes),
        None => Ok(config),
    }
}

/// Loads every function, or says which cannot be served.
pub fn load_all(
    hypervisor: &Hypervisor,
    config: &config::Config,
) -> Result<BTreeMap<String, Arc<Function>>, SetupError> {
    config
        .functions
        .iter()
        .map(|(name, settings)| {
            Function::load(hypervisor, name, settings, config.workers)
                .map(|function| (name.clone(), Arc::new(function)))
        })
        .collect()
}
