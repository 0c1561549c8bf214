"""How a run is configured: the resolved configuration, the presets and built-in names, KEY=VALUE options."""
