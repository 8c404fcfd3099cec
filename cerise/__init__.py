"""Cerise on Kubernetes: run CWL workflows on remote compute resources."""
