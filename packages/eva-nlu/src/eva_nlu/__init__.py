"""eva-nlu."""
