"""video_text: your own videos with captions or labels."""
