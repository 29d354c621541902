"""Everything the plugins share. Never imports ``cnnkit.plugins``."""
