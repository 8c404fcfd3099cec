"""Cerise on Kubernetes: run CWL workflows on remote compute resources."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("cerise-k8s")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
