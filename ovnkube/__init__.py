"""ovnkube: master and node agent of an OVN network plugin for Kubernetes."""

__version__ = "0.1.0"
