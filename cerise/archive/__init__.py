"""The archive of finished jobs: PostgreSQL, read by the apiserver and written by the
operator (`docs/operating.md`, "The archive")."""
