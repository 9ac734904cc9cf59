"""Child side: the worker loop around one env, and value conversion."""
