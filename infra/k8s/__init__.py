"""steno's production shape for Kubernetes: kustomize manifests (`base/`, `overlays/`), the tools that
render and validate them offline, and what the manifests need from steno's own code."""
