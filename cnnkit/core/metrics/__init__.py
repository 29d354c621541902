"""Measuring: top-k, COCO mAP, ROC, verification protocol, open-set identification, distances, plots."""
