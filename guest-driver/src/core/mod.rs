//! The sans-IO adapter core: the iavf-like VF state machine.
