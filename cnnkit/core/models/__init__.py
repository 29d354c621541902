"""Networks as such: the backbone contract, box geometry, published weights into a model, the layer
summary and the lecture's convolution arithmetic."""
