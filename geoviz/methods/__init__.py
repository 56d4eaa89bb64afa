"""Methods with their own models: the sparse keypoint autoencoder (keypoints.py)."""
