"""``cnnkit explain``: what a network looked at (attribution maps, feature maps, filters) for every
family, on Captum. Light to import: the command line lists the methods without loading torch."""

LAYER_METHODS = ("gradcam", "gradcam++", "eigencam", "scorecam")
METHODS = (*LAYER_METHODS, "integrated-gradients")
NEEDS_GRADIENTS = ("gradcam", "gradcam++", "integrated-gradients")
