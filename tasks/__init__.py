"""Built-in tasks, registered through the nasengine.tasks entry-point group."""
