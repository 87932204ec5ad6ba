"""The ``cdinn`` command line."""
