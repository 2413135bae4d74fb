# vfrig task runner: `just --list` shows the tasks. Each is a thin wrapper
# over `cargo rig`, which works without just.
# Install just with `cargo install just` if it is not on the machine.

# The whole test suite: unit tests, VM tests and every scenario (installs
# QEMU and cargo-nextest when missing, builds the image).
test *ARGS:
    cargo rig test {{ARGS}}

# The showcase with both VLAN state machines, side by side.
demo:
    cargo rig demo

# Replay a scenario (a bug report turned into a scenario file), printing
# every step and the PF tables as they change.
repro FILE *ARGS:
    cargo rig run --verbose {{FILE}} {{ARGS}}

# Boot a VM with the PF's VFs and open a shell in it.
vm *ARGS:
    cargo rig vm {{ARGS}}

# The long soaks: every repeat ten times longer, a random seed for the PF's
# probabilistic faults, JUnit XML in target/nextest/nightly/junit.xml.
# Shard across machines with `just nightly --partition count:1/2`.
nightly *ARGS:
    VFRIG_REPEAT_SCALE=10 VFRIG_SEED=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ') cargo rig test --profile nightly -- {{ARGS}}

# The interleaving explorer over the driver core and the PF model (no VM).
explore *ARGS:
    cargo rig explore {{ARGS}}

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

# Benchmarks: the PF core and the vhost-user path (criterion), VM boot time
# against a bare boot of the same kernel, the guest driver, and the
# interleaving explorer's states per second.
bench:
    cargo bench -p vfrig-device
    cargo bench -p vfrig-explorer --bench explore
    cargo bench -p vfrig-harness --bench boot
    cargo bench -p vfrig-harness --bench driver

# Everything CI does, locally.
ci:
    bash .ci/run
