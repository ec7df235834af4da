"""Deployment tooling: the Grafana dashboards builder and the base manifests renderer (not part of the installed package)."""
