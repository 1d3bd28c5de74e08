"""moving_shapes: the embedded synthetic video-language dataset."""
