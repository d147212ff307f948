"""The CRI runtime of ovnkube-local nodes (for the real kubelet)."""
