"""R-CNN, Fast R-CNN and Faster R-CNN (hook implementations only)."""
