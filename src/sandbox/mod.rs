//! The syscall layer that confines the worker and the helper (filled in by the sandbox work).
