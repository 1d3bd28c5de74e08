"""didemo: DiDeMo paragraph-to-video retrieval (manual download)."""
