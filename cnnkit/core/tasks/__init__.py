"""The generic tasks core owns: ``classify``, ``detect``, ``embed`` and ``stylize``."""
