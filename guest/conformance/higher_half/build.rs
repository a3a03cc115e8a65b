//! Links the `higher_half` kernel as a position-dependent executable (ET_EXEC) whose image
//! starts at 0xFFFF_8000_0000_0000. Cargo has no stable per-package codegen flags, but link
//! arguments for a package's binaries it has: the code stays position-independent (the
//! target's default), which links fine at any address.
fn main() {
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=--image-base=0xffff800000000000");
    println!("cargo:rerun-if-changed=build.rs");
}
