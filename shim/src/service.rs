//! The shim's task service: containerd's calls for the one container this shim process runs.

use std::sync::{Arc, Mutex};

use containerd_shim::api::{
    ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, Empty, KillRequest, PidsRequest, PidsResponse, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, WaitRequest, WaitResponse,
};
use containerd_shim::protos::events::task::{TaskCreate, TaskExit, TaskStart};
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::protos::ttrpc::{Code, Error as RpcError, get_status};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{
    Config, ExitSignal, Flags, StartOpts, TtrpcContext, TtrpcResult, protos::topics,
};
use mote_host::Hypervisor;

use crate::container::{self, Container, Phase};

fn rpc_error(code: Code, message: impl ToString) -> RpcError {
    RpcError::RpcStatus(get_status(code, message))
}

/// The shim: one per container.
#[derive(Clone)]
pub struct Service {
    exit: Arc<ExitSignal>,
    namespace: String,
    /// The socket this shim serves on (`unix://...`), in its serving process.
    socket: String,
    container: Arc<Mutex<Option<Arc<Container>>>>,
    hypervisor: Arc<Mutex<Option<Hypervisor>>>,
    publisher: Option<Arc<RemotePublisher>>,
}

impl Service {
    fn container(&self, id: &str) -> TtrpcResult<Arc<Container>> {
        self.container
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|container| container.id == id)
            .cloned()
            .ok_or_else(|| rpc_error(Code::NOT_FOUND, format!("no container {id}")))
    }

    /// Tells containerd of an event; a lost event is logged, not fatal.
    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Some(publisher) = &self.publisher
            && let Err(error) = publisher.publish(Context::default(), topic, &self.namespace, event)
        {
            log::warn!("cannot publish {topic}: {error}");
        }
    }

    /// KVM, opened once per shim (the shim runs one container).
    fn hypervisor(&self) -> TtrpcResult<Hypervisor> {
        let mut hypervisor = self.hypervisor.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hypervisor) = hypervisor.as_ref() {
            return Ok(hypervisor.clone());
        }
        let opened = Hypervisor::open().map_err(|e| rpc_error(Code::UNAVAILABLE, e))?;
        *hypervisor = Some(opened.clone());
        Ok(opened)
    }
}

fn pid() -> u32 {
    std::process::id()
}

impl containerd_shim::Shim for Service {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            socket: args.socket.clone(),
            container: Arc::new(Mutex::new(None)),
            hypervisor: Arc::new(Mutex::new(None)),
            publisher: None,
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> Result<String, containerd_shim::Error> {
        // One shim process per container: its id groups nothing else.
        let grouping = opts.id.clone();
        let (_, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        // containerd reads the address back from this file when it cleans up; without it
        // every container would leave its socket behind.
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> Result<DeleteResponse, containerd_shim::Error> {
        // containerd runs `delete` in the bundle when the shim itself is gone: undo what a
        // shim that died in `create` may have left mounted.
        if let Ok(bundle) = std::env::current_dir()
            && let Some(bundle) = bundle.to_str()
        {
            container::unmount(&container::rootfs_of(bundle));
        }
        let mut response = DeleteResponse::new();
        response.exit_status = 128 + libc::SIGKILL as u32;
        response.exited_at = Some(containerd_shim::util::timestamp()?).into();
        Ok(response)
    }

    fn wait(&mut self) {
        self.exit.wait();
        // The crate removes the socket after this, at the address it reads back from the
        // bundle; containerd may have removed the bundle by then (a pod's sandbox, measured),
        // and the socket would stay in /run/containerd/s. Unlinking it here, while the server
        // still runs, costs nothing: no one connects to a shim that is going away.
        if let Some(path) = self.socket.strip_prefix("unix://")
            && let Err(error) = std::fs::remove_file(path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            log::warn!("cannot remove the socket {path}: {error}");
        }
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        Service {
            publisher: Some(Arc::new(publisher)),
            ..self.clone()
        }
    }
}

impl containerd_shim::Task for Service {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        request: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        if request.terminal {
            return Err(rpc_error(
                Code::INVALID_ARGUMENT,
                "a mote guest has no terminal: run it without -t",
            ));
        }
        let container = Container::create(&request).map_err(|message| {
            log::error!("create {}: {message}", request.id);
            rpc_error(Code::FAILED_PRECONDITION, message)
        })?;
        // Opening KVM now makes a host without it fail the create, where the error is seen.
        if let Err(error) = self.hypervisor() {
            container.release();
            return Err(error);
        }
        *self.container.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(container));
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: request.id.clone(),
                bundle: request.bundle.clone(),
                pid: pid(),
                ..Default::default()
            }),
        );
        Ok(CreateTaskResponse {
            pid: pid(),
            ..Default::default()
        })
    }

    fn start(&self, _ctx: &TtrpcContext, request: StartRequest) -> TtrpcResult<StartResponse> {
        let container = self.container(&request.id)?;
        let hypervisor = self.hypervisor()?;
        let service = self.clone();
        let id = container.id.clone();
        container
            .start(&hypervisor, move |status, at| {
                service.publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(TaskExit {
                        container_id: id.clone(),
                        id,
                        pid: pid(),
                        exit_status: status,
                        exited_at: Some(at).into(),
                        ..Default::default()
                    }),
                );
            })
            .map_err(|message| rpc_error(Code::FAILED_PRECONDITION, message))?;
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: request.id.clone(),
                pid: pid(),
                ..Default::default()
            }),
        );
        Ok(StartResponse {
            pid: pid(),
            ..Default::default()
        })
    }

    fn state(&self, _ctx: &TtrpcContext, request: StateRequest) -> TtrpcResult<StateResponse> {
        let container = self.container(&request.id)?;
        let state = container.state();
        Ok(StateResponse {
            id: container.id.clone(),
            bundle: container.bundle.clone(),
            pid: pid(),
            status: state.phase.status().into(),
            stdin: container.stdin.clone(),
            stdout: container.stdout.clone(),
            stderr: container.stderr.clone(),
            exit_status: state.exit_status,
            exited_at: state.exited_at.clone().into(),
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, request: KillRequest) -> TtrpcResult<Empty> {
        self.container(&request.id)?.kill(request.signal);
        Ok(Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, request: WaitRequest) -> TtrpcResult<WaitResponse> {
        let container = self.container(&request.id)?;
        let (exit_status, exited_at) = container.wait();
        Ok(WaitResponse {
            exit_status,
            exited_at: Some(exited_at).into(),
            ..Default::default()
        })
    }

    fn delete(&self, _ctx: &TtrpcContext, request: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        let container = self.container(&request.id)?;
        let state = container.state();
        if state.phase == Phase::Running {
            return Err(rpc_error(
                Code::FAILED_PRECONDITION,
                format!("container {} is running: kill it first", container.id),
            ));
        }
        let response = DeleteResponse {
            pid: pid(),
            exit_status: state.exit_status,
            exited_at: state.exited_at.clone().into(),
            ..Default::default()
        };
        drop(state);
        container.release();
        *self.container.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(response)
    }

    fn pids(&self, _ctx: &TtrpcContext, request: PidsRequest) -> TtrpcResult<PidsResponse> {
        self.container(&request.id)?;
        Ok(PidsResponse {
            processes: vec![ProcessInfo {
                pid: pid(),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        _request: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        Ok(ConnectResponse {
            shim_pid: pid(),
            task_pid: pid(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _request: ShutdownRequest) -> TtrpcResult<Empty> {
        let running = self
            .container
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|container| container.state().phase == Phase::Running);
        // containerd asks every shim to shut down when its tasks are gone; one with a guest
        // still running stays.
        if !running {
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}
