"""Tracking, manifests, runs registry and reports (a package, so its conftest has its own name)."""
