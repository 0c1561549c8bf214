"""Built-in spaces, registered through the nasengine.spaces entry-point group."""
