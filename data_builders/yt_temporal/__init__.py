"""yt_temporal: YT-Temporal-180M (MERLOT's pre-training corpus), ASR-captioned YouTube clips."""
