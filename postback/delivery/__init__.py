"""The delivery engine: claim due deliveries in batches, send them, record every attempt."""
