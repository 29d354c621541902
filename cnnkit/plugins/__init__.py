"""Built-in plugins. Each is loaded through the ``cnnkit`` entry-point group like any other."""
