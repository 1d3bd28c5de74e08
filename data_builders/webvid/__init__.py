"""webvid: WebVid-2M / WebVid-10M video-caption pre-training corpus."""
