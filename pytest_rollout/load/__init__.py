"""The load: the worker protocol, the engines, the worker process, the fleet, schedules and histograms."""
