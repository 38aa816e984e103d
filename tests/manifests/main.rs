//! Placeholder until the manifests conformance test lands.
