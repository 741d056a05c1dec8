"""Several gateway instances per site on a NATS cluster: the lease that makes one active, and the
journal that keeps the others' files equal to its own (docs/deploy.md, "NATS cluster")."""
