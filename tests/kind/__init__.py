"""The kind tier: a package, so that its cluster (a package-scoped fixture) goes as soon as its tests end."""
