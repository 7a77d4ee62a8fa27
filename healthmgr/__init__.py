"""healthmgr: health manager for load-balancer amphorae."""

__version__ = "0.1.0"
