//! Workspace-level tests live in the `tests/` targets of this package.
