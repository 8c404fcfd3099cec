"""The REST front door: the Cerise jobs API, GA4GH WES 1.1 and the WebDAV file exchange.

It translates requests into WorkflowJob operations on the Kubernetes API and serves the
file exchange directory; it never opens an SSH connection or runs a scheduler command.
"""
