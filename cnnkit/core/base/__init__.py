"""The foundation every wing stands on: errors, atomic writes, output paths, the registries, hook
specifications and plugin manager, the run settings and the device."""
