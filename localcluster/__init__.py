"""A kind-like Kubernetes cluster made of network namespaces, and the process
plumbing (OVN central, OVS nodes, control plane) that tests reuse."""
