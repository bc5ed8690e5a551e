"""instagram_dm."""
