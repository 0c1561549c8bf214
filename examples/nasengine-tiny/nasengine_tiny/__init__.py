"""An example third-party nasengine plugin package (see the README's "Writing a plugin")."""
