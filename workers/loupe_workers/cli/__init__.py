"""The ``loupe`` command line."""
