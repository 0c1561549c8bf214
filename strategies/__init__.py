"""Built-in strategies, registered through the nasengine.strategies entry-point group."""
