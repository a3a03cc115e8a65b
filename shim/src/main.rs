//! `containerd-shim-mote-v1`: containerd's runtime for containers whose image holds a mote
//! guest. Each container is one mote VM, run by a shim process of its own (see
//! docs/kubernetes.md).

mod cgroup;
mod container;
mod service;

fn main() {
    containerd_shim::run::<service::Service>("io.containerd.mote.v1", None);
}
