//! The virtio-pci transport from userspace.
