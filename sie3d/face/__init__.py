"""Face analysis: detection + alignment, identity embeddings, emotion classifiers, 68-point landmarks."""
