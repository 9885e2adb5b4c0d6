"""The HTTP door: the ops listener (unsubscribe links, metrics, health)."""
