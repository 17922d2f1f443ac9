//! Helpers shared by the end-to-end tests (namespaces, `ip -j`, `iptables-save`).
