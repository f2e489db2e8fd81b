"""Node lab: the node script against a real containerd and TLS registry (see lab.py)."""
