"""The ``healthmgr`` command line."""
