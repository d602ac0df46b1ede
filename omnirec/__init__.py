"""omnirec: real-time recommender for omnichannel retail."""
