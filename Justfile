# vfrig task runner: `just --list` shows the tasks.
# Install just with `cargo install just` if it is not on the machine.

# Run the whole test suite (what CI runs after its checks).
test:
    cargo nextest run --workspace
    cargo test --workspace --doc

# Format all crates.
fmt:
    cargo fmt --all

# Check formatting and lints exactly as CI does.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Fuzz the virtchnl decoder (needs a nightly toolchain and cargo-fuzz).
fuzz seconds="300":
    cargo +nightly fuzz run decode -- -max_total_time={{seconds}}

# Run the PF model's random sequences with another seed.
seed value:
    VFRIG_SEED={{value}} cargo test -p vfrig-device --test pf_sequences

# Benchmarks: the PF core and the vhost-user path (criterion), and VM boot
# time against a bare boot of the same kernel.
bench:
    cargo bench -p vfrig-device
    cargo bench -p vfrig-harness --bench boot

# Everything CI does, locally.
ci:
    bash .ci/run
