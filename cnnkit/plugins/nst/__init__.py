"""Neural style transfer (hook implementations only)."""
