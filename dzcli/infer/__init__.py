"""Full-image inference: overlapping tiles with feathered blending, bounded memory."""
