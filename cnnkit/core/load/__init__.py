"""Any model source made ready for inference (checkpoint, published name, .cfg, exported file), the
fast inference path, video, evaluation."""
