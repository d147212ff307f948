"""Pure translation: Kubernetes objects and the master's allocations in, OVN
rows out. No I/O, no state; the controllers (`ovnkube/master/controllers/`)
decide when to translate and hand the rows to northd_sync."""
