"""howto100m_features: HowTo100M 2D / 3D video features, ASR captions and log-mel spectrograms."""
