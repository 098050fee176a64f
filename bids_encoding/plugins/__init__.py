"""The plugin host: hook specifications, plugin types, discovery through entry points, and the core's own plugins."""
