"""What the server says about itself: pre-flight identity and capacity (and, per server, its own metrics)."""
