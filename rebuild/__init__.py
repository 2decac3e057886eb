"""rebuild: Kubernetes disaster recovery from git (Pulumi + GitOps)."""

__version__ = "0.1.0"
