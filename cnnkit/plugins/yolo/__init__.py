"""YOLO v1/v2/v3 detectors with Darknet backbones (hook implementations only)."""
