"""The real local environment for development and tests.

An embedded Kubernetes control plane, an OpenSSH server on loopback and real batch
schedulers (Slurm, Torque through Slurm's wrappers, Son of Grid Engine), each started
by code in this package, with readiness checks and clean teardown.
"""
