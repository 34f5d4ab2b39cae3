"""Where the target and the fleet run: the Platform protocol, rolling-update arithmetic, local and kubernetes."""
