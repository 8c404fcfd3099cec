"""Access to the Kubernetes API: client configuration and status transitions."""
